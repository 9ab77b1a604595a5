#include "tools/ember/eval_report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "engine/error.h"
#include "engine/training_state.h"

namespace ember::cli {
namespace {

std::vector<std::string> class_names(std::int64_t classes, const Json& run) {
  std::vector<std::string> names = run_class_names(run, classes);
  for (std::int64_t c = static_cast<std::int64_t>(names.size()); c < classes; ++c) names.push_back(std::to_string(c));
  return names;
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (char c : text) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
  return quoted + "\"";
}

void write_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    if (!file) throw Error(path + ": cannot write the report (creating " + temporary + "): " + std::strerror(errno));
    file << text;
    file.flush();
    if (!file) {
      std::remove(temporary.c_str());
      throw Error(path + ": writing the report failed; the previous file, if any, is untouched");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(temporary.c_str());
    throw Error(path + ": rename failed: " + reason + "; the previous file, if any, is untouched");
  }
}

double fraction(std::int64_t part, std::int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

}  // namespace

ClassReport::ClassReport(std::int64_t classes, const Json& run)
    : classes_(classes), names_(class_names(classes, run)), confusion_(static_cast<std::size_t>(classes * classes), 0) {}

void ClassReport::add(std::span<const float> logits, std::span<const std::int32_t> labels, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const auto row = logits.subspan(static_cast<std::size_t>(i * classes_), static_cast<std::size_t>(classes_));
    // The first of equal maxima, as the loss counts a correct row.
    const std::int64_t predicted = std::max_element(row.begin(), row.end()) - row.begin();
    ++confusion_[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)] * classes_ + predicted)];
  }
}

std::int64_t ClassReport::count(std::int64_t actual, std::int64_t predicted) const {
  return confusion_[static_cast<std::size_t>(actual * classes_ + predicted)];
}

std::int64_t ClassReport::samples_of(std::int64_t actual) const {
  std::int64_t n = 0;
  for (std::int64_t p = 0; p < classes_; ++p) n += count(actual, p);
  return n;
}

std::string ClassReport::text() const {
  std::size_t width = 6;
  for (const std::string& n : names_) width = std::max(width, n.size() + 1);
  char line[160];
  std::string out = "per-class accuracy:\n";
  for (std::int64_t c = 0; c < classes_; ++c) {
    std::snprintf(line, sizeof line, "  %-*s %6.2f%% (%lld/%lld)\n", static_cast<int>(width), names_[c].c_str(),
                  100.0 * fraction(count(c, c), samples_of(c)), static_cast<long long>(count(c, c)),
                  static_cast<long long>(samples_of(c)));
    out += line;
  }
  out += "confusion matrix (rows: true class, columns: predicted):\n  " + std::string(width, ' ');
  for (const std::string& n : names_) out += " " + std::string(width > n.size() ? width - n.size() : 0, ' ') + n;
  out += "\n";
  for (std::int64_t a = 0; a < classes_; ++a) {
    std::snprintf(line, sizeof line, "  %-*s", static_cast<int>(width), names_[a].c_str());
    out += line;
    for (std::int64_t p = 0; p < classes_; ++p) {
      std::snprintf(line, sizeof line, " %*lld", static_cast<int>(width), static_cast<long long>(count(a, p)));
      out += line;
    }
    out += "\n";
  }
  return out;
}

void ClassReport::write_csv(const std::string& path) const {
  std::string csv = "class,samples,correct,accuracy";
  for (const std::string& n : names_) csv += ",predicted " + csv_field(n);
  csv += "\n";
  for (std::int64_t a = 0; a < classes_; ++a) {
    char accuracy[32];
    std::snprintf(accuracy, sizeof accuracy, "%.6f", fraction(count(a, a), samples_of(a)));
    csv += csv_field(names_[a]) + "," + std::to_string(samples_of(a)) + "," + std::to_string(count(a, a)) + "," + accuracy;
    for (std::int64_t p = 0; p < classes_; ++p) csv += "," + std::to_string(count(a, p));
    csv += "\n";
  }
  write_atomically(path, csv);
}

}  // namespace ember::cli
