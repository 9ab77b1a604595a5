// --resume of a checkpoint saved within an epoch (--save-every) continues at the saved
// batch; a checkpoint whose step does not fall within its epoch is refused, naming it.
// (That resuming from within an epoch ends bitwise like an uninterrupted run is what
// checkpoint_kill_test.cpp checks, from wherever SIGKILL leaves the run.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::CliRun;
using testing::run_ember;

// The checkpoint at `path` with its metadata "epoch" and "step" replaced.
void rewrite_position(const std::string& path, int epoch, std::int64_t step) {
  const SafetensorsFile file = SafetensorsFile::read(path);
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, tensor] : file.tensors()) tensors.push_back({name, tensor.shape, file.floats(name, tensor.shape)});
  std::map<std::string, std::string> metadata = file.metadata();
  metadata["epoch"] = std::to_string(epoch);
  metadata["step"] = std::to_string(step);
  write_safetensors(path, tensors, metadata);
}

TEST(ResumeWithinAnEpoch, ContinuesAtTheSavedBatchAndRefusesAStepOutsideItsEpoch) {
  char pattern[] = "/tmp/ember-resume-XXXXXX";
  const std::string directory = ::mkdtemp(pattern);
  testing::write_band_dataset(directory, 256, 64);  // 8 batches of 32 per epoch
  const std::string flags = "train --model lenet --data " + directory + " --batch-size 32 --seed 3 --epochs 2 ";
  const std::string checkpoint = directory + "/model.safetensors";
  const CliRun first = run_ember("train --model lenet --data " + directory + " --batch-size 32 --seed 3 --epochs 1 --save " + checkpoint);
  ASSERT_EQ(first.exit_code, 0) << first.output;

  // Step 13 of epoch 2 (1 epoch done): the resumed run trains batches 6 to 8 only.
  rewrite_position(checkpoint, 1, 13);
  const CliRun within = run_ember(flags + "--resume " + checkpoint);
  EXPECT_EQ(within.exit_code, 0) << within.output;
  EXPECT_EQ(within.output.find("batch 5/8"), std::string::npos) << within.output;
  EXPECT_NE(within.output.find("epoch 2/2 batch 6/8"), std::string::npos) << within.output;
  EXPECT_NE(within.output.find("epoch 2/2 batch 8/8"), std::string::npos) << within.output;

  for (const auto& [epoch, step] : {std::pair<int, std::int64_t>{1, 3}, {1, 16}, {0, 8}}) {
    rewrite_position(checkpoint, epoch, step);
    const CliRun refused = run_ember(flags + "--resume " + checkpoint);
    EXPECT_EQ(refused.exit_code, 1) << refused.output;
    EXPECT_NE(refused.output.find(checkpoint + ": step " + std::to_string(step) + " is not within epoch " +
                                  std::to_string(epoch + 1) + " of this run's 8 batches per epoch"),
              std::string::npos)
        << refused.output;
  }
  fs::remove_all(directory);
}

// Without --micro-batch a run takes the automatic choice (32 for seed-cnn at batch 64),
// but a resumed run keeps the one its checkpoint records (16: a run from before the
// choice, or one that asked for it); asking for another is refused.
TEST(ResumeWithinAnEpoch, AnAutomaticMicroBatchContinuesTheCheckpointsOwn) {
  char pattern[] = "/tmp/ember-resume-micro-XXXXXX";
  const std::string directory = ::mkdtemp(pattern);
  testing::write_band_dataset(directory, 128, 64);  // 2 batches of 64 per epoch
  const std::string checkpoint = directory + "/model.safetensors";
  const std::string flags = "train --model seed-cnn --data " + directory + " --batch-size 64 --seed 3 ";
  const CliRun first = run_ember(flags + "--epochs 1 --micro-batch 16 --save " + checkpoint);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const CliRun resumed = run_ember(flags + "--epochs 2 --resume " + checkpoint);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("epoch 2/2 batch 2/2"), std::string::npos) << resumed.output;
  const CliRun refused = run_ember(flags + "--epochs 2 --micro-batch 32 --resume " + checkpoint);
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("\"micro_batch\":16"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("--resume continues only the same run"), std::string::npos) << refused.output;
  fs::remove_all(directory);
}

}  // namespace
}  // namespace ember
