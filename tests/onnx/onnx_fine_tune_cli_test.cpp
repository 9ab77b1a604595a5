// A model trained elsewhere, fine-tuned by the CLI: `ember import` a PyTorch export, then
// `ember train --init` the checkpoint, whose own model it trains when no --model is given.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "engine/safetensors.h"
#include "tools/cli_helpers.h"

namespace {

using ember::testing::CliRun;

const std::string data_dir = std::string(EMBER_TEST_DATA_DIR) + "/onnx/";

class OnnxFineTuneCli : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ember-onnx-fine-tune-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ember::testing::write_band_dataset(directory_, 128, 64);
  }
  void TearDown() override { std::system(("rm -rf " + directory_).c_str()); }
  std::string directory_;
};

TEST_F(OnnxFineTuneCli, AnImportedPyTorchResNetFineTunesFromItsCheckpoint) {
  const std::string imported = directory_ + "/resnet8.safetensors", tuned = directory_ + "/tuned.safetensors";
  const CliRun import = ember::testing::run_ember("import " + data_dir + "resnet8.onnx --save " + imported);
  ASSERT_EQ(import.exit_code, 0) << import.output;

  // No --model: the checkpoint's own model (the imported ResNet with its BatchNorms).
  const CliRun run = ember::testing::run_ember("train --init " + imported + " --data " + directory_ +
                                               " --batch-size 32 --max-steps 4 --lr 1e-3 --optimizer adam --save " + tuned);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::string first_line = run.output.substr(0, run.output.find('\n'));
  // Every tensor of the import loads (resnet8: 56, its BatchNorms' statistics included).
  EXPECT_NE(first_line.find("weights from " + imported + " (56 tensors loaded, 0 skipped, 0 of the file unused)"), std::string::npos)
      << first_line;

  const ember::SafetensorsFile before = ember::SafetensorsFile::read(imported), after = ember::SafetensorsFile::read(tuned);
  EXPECT_EQ(before.metadata().at("model_spec"), after.metadata().at("model_spec")) << "the model trained is the imported one";
  int changed = 0, compared = 0;
  for (const auto& [name, tensor] : before.tensors()) {
    if (name.rfind("optimizer.", 0) == 0) continue;
    ++compared;
    const auto& trained = after.tensor(name);
    ASSERT_EQ(trained.data.size(), tensor.data.size()) << name;
    if (!std::equal(trained.data.begin(), trained.data.end(), tensor.data.begin())) ++changed;
  }
  EXPECT_GT(compared, 0);
  EXPECT_GT(changed, 0) << "four Adam steps changed no weight of the import";
}

// A checkpoint that is not a model (a bare PyTorch state_dict) keeps the default model, so
// `--init state_dict.safetensors` means what it meant before: seed-cnn from those weights.
TEST_F(OnnxFineTuneCli, AStateDictWithoutModelKeepsTheDefaultModel) {
  const CliRun run = ember::testing::run_ember("train --init " + std::string(EMBER_TEST_DATA_DIR) +
                                               "/resnet_state_dict.safetensors --data " + directory_ + " --max-steps 1");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.output.find("conv1.weight: expected shape [32, 1, 3, 3]"), std::string::npos) << "not seed-cnn's: " << run.output;
}

}  // namespace
