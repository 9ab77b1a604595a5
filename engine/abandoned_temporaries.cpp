#include "engine/abandoned_temporaries.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string_view>

namespace ember {
namespace {

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The writer's pid if `name` is "<file_name>.tmp-<pid>-<tid>-<n>", else -1.
long writer_of(std::string_view name, const std::string& file_name) {
  const std::string prefix = file_name + ".tmp-";
  if (name.substr(0, prefix.size()) != prefix) return -1;
  std::string_view rest = name.substr(prefix.size());
  std::string_view parts[3];
  for (int i = 0; i < 3; ++i) {
    const std::size_t dash = i < 2 ? rest.find('-') : rest.size();
    if (dash == std::string_view::npos) return -1;
    parts[i] = rest.substr(0, dash);
    if (!all_digits(parts[i])) return -1;
    rest = i < 2 ? rest.substr(dash + 1) : std::string_view();
  }
  if (parts[0].size() > 9) return -1;  // pids have at most 7 digits
  return std::stol(std::string(parts[0]));
}

bool is_running(long pid) {
  if (pid == ::getpid()) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;  // EPERM: it runs, as another user
}

}  // namespace

std::int64_t remove_abandoned_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path file(path);
  const std::string file_name = file.filename().string();
  if (file_name.empty()) return 0;
  std::int64_t removed = 0;
  std::error_code error;  // an unreadable directory: nothing removed, the save will say why
  for (fs::directory_iterator it(file.has_parent_path() ? file.parent_path() : fs::path("."), error);
       !error && it != fs::directory_iterator(); it.increment(error)) {
    const long pid = writer_of(it->path().filename().string(), file_name);
    if (pid < 0 || is_running(pid)) continue;
    std::error_code ignored;
    if (fs::remove(it->path(), ignored)) ++removed;
  }
  return removed;
}

}  // namespace ember
