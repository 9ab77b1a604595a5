// remove_abandoned_temporaries: what dead writers left beside a file goes; a live
// writer's temporary, the file itself and anything not named like a temporary of it stay.
#include "engine/abandoned_temporaries.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "support/file_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;

class AbandonedTemporaries : public testing::TempDirectoryTest {
 protected:
  void touch(const std::string& name) { testing::write_file(path(name), testing::Bytes{1}); }
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(directory_)) names.insert(entry.path().filename().string());
    return names;
  }
};

TEST_F(AbandonedTemporaries, RemovesOnlyTheTemporariesOfDeadWritersOfThatFile) {
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  ::waitpid(dead, nullptr, 0);
  const pid_t alive = ::fork();
  if (alive == 0) {
    ::pause();
    ::_exit(0);
  }
  ASSERT_GT(alive, 0);
  const std::string d = std::to_string(dead), a = std::to_string(alive), self = std::to_string(::getpid());

  const std::set<std::string> kept = {
      "m.safetensors",
      "m.safetensors.tmp-" + a + "-" + a + "-0",  // a live writer's
      "other.safetensors.tmp-" + d + "-1-0",       // another file's
      "m.safetensors.tmp-" + d + "-1",             // not the writer's pattern
      "m.safetensors.tmp-" + d + "-1-0x",
      "m.safetensors.tmp--1-0",
      "m.safetensors.tmp-" + d + "-1-0.bak",
      "xm.safetensors.tmp-" + d + "-1-0",
  };
  const std::set<std::string> removed = {
      "m.safetensors.tmp-" + d + "-" + d + "-0",
      "m.safetensors.tmp-" + d + "-17-12345678901234567890",
      "m.safetensors.tmp-" + self + "-1-3",  // this process's own: a restarted container reuses pids
  };
  for (const std::string& name : kept) touch(name);
  for (const std::string& name : removed) touch(name);

  EXPECT_EQ(remove_abandoned_temporaries(path("m.safetensors")), static_cast<std::int64_t>(removed.size()));
  EXPECT_EQ(listing(), kept);
  // The file need not exist; a missing directory is no error (the save will report it).
  fs::remove(path("m.safetensors"));
  EXPECT_EQ(remove_abandoned_temporaries(path("m.safetensors")), 0);
  EXPECT_EQ(remove_abandoned_temporaries(path("no-such-directory/m.safetensors")), 0);

  ::kill(alive, SIGKILL);
  ::waitpid(alive, nullptr, 0);
}

}  // namespace
}  // namespace ember
