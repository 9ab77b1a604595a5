// `ember train --save` when the save cannot be written: onto a full filesystem and into a
// read-only directory. The run fails with exit code 1 and a message naming the
// checkpoint and the reason; the checkpoint it resumed from is left byte for byte as it
// was, and no temporary is left beside it. Both need a small tmpfs (root, as in CI); a
// file size limit stands in for a full filesystem without it, and a directory without
// write permission for a read-only one (which stops only other users than root).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "support/file_helpers.h"
#include "support/scratch_mount.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::file_bytes;
using testing::run_ember;
using testing::ScratchMount;

class CheckpointSaveFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ember-save-failure-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    testing::write_band_dataset(directory_, 256, 64);
    // One epoch of LeNet: a 0.7 MB checkpoint to resume from.
    const CliRun first = run_ember(train_flags(1) + "--save " + directory_ + "/first.safetensors");
    ASSERT_EQ(first.exit_code, 0) << first.output;
    checkpoint_ = file_bytes(directory_ + "/first.safetensors");
    ASSERT_GT(checkpoint_.size(), 700'000u);
    fs::create_directory(target_directory());
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(target_directory(), fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(directory_, ignored);
  }

  std::string train_flags(int epochs) const {
    return "train --model lenet --data " + directory_ + " --batch-size 32 --seed 3 --epochs " + std::to_string(epochs) + " ";
  }
  // The checkpoints' own directory: a mount point in some tests.
  std::string target_directory() const { return directory_ + "/target"; }
  std::string target() const { return target_directory() + "/model.safetensors"; }
  void place_checkpoint() const {
    std::FILE* file = std::fopen(target().c_str(), "wb");
    ASSERT_NE(file, nullptr) << target();
    ASSERT_EQ(std::fwrite(checkpoint_.data(), 1, checkpoint_.size(), file), checkpoint_.size());
    ASSERT_EQ(std::fclose(file), 0);
  }
  // Resumes the checkpoint in target() for a second epoch, saving over it.
  CliRun resume_and_save() const { return run_ember(train_flags(2) + "--resume " + target() + " --save " + target()); }

  std::set<std::string> target_listing() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(target_directory())) names.insert(entry.path().filename().string());
    return names;
  }
  void expect_the_checkpoint_intact() const {
    EXPECT_TRUE(file_bytes(target()) == checkpoint_) << "the checkpoint resumed from was changed";
    EXPECT_EQ(target_listing(), std::set<std::string>{"model.safetensors"}) << "no temporary may be left";
  }

  std::string directory_;
  std::string checkpoint_;
};

// A tmpfs with room for the checkpoint but not for a second copy beside it: the write
// of the new one's temporary fails half way.
TEST_F(CheckpointSaveFailureTest, SaveOntoAFullFilesystemFailsNamingTheFileAndKeepsTheOldCheckpoint) {
  ScratchMount mount(target_directory(), checkpoint_.size() * 3 / 2);
  std::optional<testing::FileSizeLimit> limit;
  if (!mount.mounted()) std::printf("no tmpfs (%s): RLIMIT_FSIZE makes the write fail instead\n", mount.why_not().c_str());
  place_checkpoint();
  // The limit is inherited by the command (and SIGXFSZ stays ignored across exec).
  if (!mount.mounted()) limit.emplace(checkpoint_.size() / 2);
  const CliRun run = resume_and_save();
  limit.reset();
  EXPECT_EQ(run.exit_code, 1) << run.output;
  const std::string reason = std::strerror(mount.mounted() ? ENOSPC : EFBIG);
  EXPECT_NE(run.output.find("ember train: error: " + target() + ": write failed: " + reason +
                            "; the previous file, if any, is untouched"),
            std::string::npos)
      << run.output;
  expect_the_checkpoint_intact();
}

// Root writes into any directory whatever its permissions, so as root (CI) the directory
// is a tmpfs remounted read-only.
TEST_F(CheckpointSaveFailureTest, SaveIntoAReadOnlyDirectoryFailsNamingTheFileAndKeepsTheOldCheckpoint) {
  const bool root = ::geteuid() == 0;
  std::optional<ScratchMount> mount;
  if (root) {
    mount.emplace(target_directory(), 4 << 20);
    if (!mount->mounted()) GTEST_SKIP() << "root ignores directory permissions, and " << mount->why_not();
  }
  place_checkpoint();
  if (root) {
    const std::string failed = mount->make_read_only();
    ASSERT_EQ(failed, "");
  } else {
    fs::permissions(target_directory(), fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  }
  const CliRun run = resume_and_save();
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("ember train: error: " + target() + ": cannot write (creating " + target() + ".tmp-"),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find(std::strerror(root ? EROFS : EACCES)), std::string::npos) << run.output;
  expect_the_checkpoint_intact();
}

}  // namespace
}  // namespace ember
