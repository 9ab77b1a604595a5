// Fine-tuning from the command line: ember train --init a checkpoint into a model with a
// new head (--init-skip), --freeze a layer, and the refusals, each naming what was wrong.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model_spec.h"
#include "engine/safetensors.h"
#include "tools/cli_helpers.h"

namespace {

using ember::testing::CliRun;

CliRun ember_run(const std::string& arguments) { return ember::testing::run_ember(arguments); }

// The bytes of one tensor of a safetensors file.
std::string tensor_bytes(const std::string& path, const std::string& name) {
  const ember::SafetensorsFile file = ember::SafetensorsFile::read(path);
  const auto& t = file.tensor(name);
  return std::string(reinterpret_cast<const char*>(t.data.data()), t.data.size());
}

// The train_loss column of a training log, one value per epoch.
std::vector<double> train_losses(const std::string& log) {
  std::istringstream lines(ember::testing::file_bytes(log));
  std::string line;
  std::getline(lines, line);  // header
  std::vector<double> losses;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string field;
    for (int i = 0; i < 4 && std::getline(fields, field, ','); ++i) {}
    losses.push_back(std::stod(field));
  }
  return losses;
}

class FineTuneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/ember-fine-tune-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ember::testing::write_band_dataset(directory_, 256, 64);
    write_five_class_data(directory_ + "/five");
    // seed-cnn with a 5-class head: the same layer names, fc2 of another shape.
    ember::Json spec = ember::builtin_model_spec("seed-cnn");
    for (auto& layer : spec["layers"]) {
      if (layer["name"] == "fc2") layer["out_features"] = 5;
    }
    std::ofstream(directory_ + "/five.json") << spec.dump(2);
    base_ = directory_ + "/base.safetensors";
    const CliRun base = ember_run("train --model seed-cnn --data " + directory_ + " --batch-size 32 --max-steps 6 --save " + base_);
    ASSERT_EQ(base.exit_code, 0) << base.output;
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + directory_).c_str()); }

  // 5 classes: a bright band at one of 5 rows (the 10-class data's bands, every other one).
  static void write_five_class_data(const std::string& dir) {
    std::system(("mkdir -p " + dir).c_str());
    std::mt19937 random(7);
    for (const auto& [split, count] : {std::pair<std::string, int>{"train", 320}, {"t10k", 64}}) {
      std::vector<std::uint8_t> images(static_cast<std::size_t>(count) * 784), labels(static_cast<std::size_t>(count));
      for (int i = 0; i < count; ++i) {
        const int label = static_cast<int>(random() % 5);
        labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(label);
        for (int p = 0; p < 784; ++p) {
          const bool band = p / 28 >= 2 + 4 * label && p / 28 < 4 + 4 * label;
          images[static_cast<std::size_t>(i * 784 + p)] = static_cast<std::uint8_t>(band ? 200 + random() % 56 : random() % 60);
        }
      }
      ember::testing::write_idx(dir + "/" + split + "-images-idx3-ubyte.gz", {static_cast<std::uint32_t>(count), 28, 28}, images);
      ember::testing::write_idx(dir + "/" + split + "-labels-idx1-ubyte.gz", {static_cast<std::uint32_t>(count)}, labels);
    }
  }
  static std::string five_flags() {
    return "train --model " + directory_ + "/five.json --data " + directory_ + "/five --batch-size 32 --lr 3e-3 --optimizer adamw ";
  }
  static std::string directory_, base_;
};
std::string FineTuneTest::directory_, FineTuneTest::base_;

TEST_F(FineTuneTest, ANewHeadTrainsOnFrozenPretrainedConvolutions) {
  const std::string tuned = directory_ + "/tuned.safetensors", log = directory_ + "/tuned.csv";
  const CliRun run = ember_run(five_flags() + "--epochs 3 --init " + base_ + " --init-skip fc2 --freeze conv1 --save " + tuned +
                               " --log " + log);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string first_line = run.output.substr(0, run.output.find('\n'));
  EXPECT_NE(first_line.find("weights from " + base_ + " (4 tensors loaded, 2 skipped, 2 of the file unused)"), std::string::npos)
      << first_line;
  EXPECT_NE(first_line.find("320 parameters frozen (conv1)"), std::string::npos) << first_line;
  for (const char* name : {"conv1.weight", "conv1.bias"}) {
    EXPECT_TRUE(tensor_bytes(tuned, name) == tensor_bytes(base_, name)) << name << " changed";
    // AdamW decays every weight it steps (0.01): a frozen one it must not step at all.
    for (const char* state : {"optimizer.exp_avg.", "optimizer.exp_avg_sq."}) {
      const std::string bytes = tensor_bytes(tuned, state + std::string(name));
      EXPECT_EQ(bytes, std::string(bytes.size(), '\0')) << state << name;
    }
  }
  EXPECT_FALSE(tensor_bytes(tuned, "fc1.weight") == tensor_bytes(base_, "fc1.weight"));
  const std::vector<double> losses = train_losses(log);
  ASSERT_EQ(losses.size(), 3u) << ember::testing::file_bytes(log);
  EXPECT_LT(losses[2], losses[0]) << ember::testing::file_bytes(log);
  EXPECT_LT(losses[2], 0.5 * std::log(5.0)) << "the head learns the bands the frozen convolution sees";

  // Resumed without --freeze: the checkpoint's frozen layers stay frozen.
  const CliRun resumed = ember_run(five_flags() + "--epochs 4 --resume " + tuned + " --save " + tuned);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("parameters frozen (conv1)"), std::string::npos) << resumed.output;
  EXPECT_TRUE(tensor_bytes(tuned, "conv1.weight") == tensor_bytes(base_, "conv1.weight"));
  // Another --freeze is another run: refused, both settings shown.
  const CliRun other = ember_run(five_flags() + "--epochs 5 --resume " + tuned + " --freeze fc1");
  EXPECT_EQ(other.exit_code, 1) << other.output;
  EXPECT_NE(other.output.find("\"freeze\":[\"conv1\"]"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("--resume continues only the same run, found"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("\"freeze\":[\"fc1\"]"), std::string::npos) << other.output;
}

TEST_F(FineTuneTest, RefusalsNameWhatWasWrong) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"--init " + base_, {base_, "tensor 'fc2.weight'", "expected shape [5, 128]", "found [10, 128]", "--init-skip"}},
      {"--init " + base_ + " --init-skip fc3", {"--init-skip: 'fc3' matches no tensor", "conv1, fc1, fc2"}},
      {"--freeze conv2", {"--freeze: 'conv2' matches no tensor", "conv1, fc1, fc2"}},
      {"--init " + base_ + " --init-skip fc2 --resume " + base_, {"--init " + base_ + " and --resume " + base_, "expected one of them"}},
      {"--init-skip fc2", {"--init-skip needs --init"}},
      {"--init " + directory_ + "/none.safetensors", {directory_ + "/none.safetensors"}},
  };
  for (const auto& [flags, parts] : cases) {
    const CliRun run = ember_run(five_flags() + "--max-steps 1 " + flags);
    EXPECT_EQ(run.exit_code, 1) << flags << ": " << run.output;
    for (const std::string& part : parts) EXPECT_NE(run.output.find(part), std::string::npos) << flags << ": " << run.output;
  }
}

}  // namespace
