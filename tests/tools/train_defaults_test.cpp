// ember train's defaults and flags that used to go wrong: an explicit --weight-decay 0,
// the log header of a resumed run, the thread count, and the models every help lists.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "engine/cpu_count.h"
#include "engine/graph.h"
#include "engine/model_spec.h"
#include "engine/safetensors.h"
#include "tools/cli_helpers.h"

namespace {

using ember::testing::CliRun;

class TrainDefaultsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/ember-defaults-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ember::testing::write_band_dataset(directory_, 128, 64);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + directory_).c_str()); }
  static CliRun train(const std::string& flags, const std::string& prefix = "") {
    return ember::testing::run_ember(
        "train --model seed-cnn --data " + directory_ + " --batch-size 32 --seed 3 --threads 1 " + flags, prefix);
  }
  static ember::Json optimizer_of(const std::string& checkpoint) {
    return ember::Json::parse(ember::SafetensorsFile::read(checkpoint).metadata().at("optimizer"));
  }
  static std::string directory_;
};
std::string TrainDefaultsTest::directory_;

TEST_F(TrainDefaultsTest, AnExplicitZeroWeightDecayIsUsedAndRecorded) {
  const std::string zero = directory_ + "/decay0.safetensors", unset = directory_ + "/decay-default.safetensors";
  const std::string hundredth = directory_ + "/decay001.safetensors";
  const std::string adamw = "--optimizer adamw --lr 0.05 --max-steps 3 ";
  ASSERT_EQ(train(adamw + "--weight-decay 0 --save " + zero).exit_code, 0);
  ASSERT_EQ(train(adamw + "--save " + unset).exit_code, 0);
  ASSERT_EQ(train(adamw + "--weight-decay 0.01 --save " + hundredth).exit_code, 0);
  EXPECT_EQ(optimizer_of(zero)["weight_decay"].get<double>(), 0.0);
  EXPECT_FLOAT_EQ(optimizer_of(unset)["weight_decay"].get<float>(), 0.01f);
  // AdamW without the flag decays by PyTorch's 0.01; with 0, not at all.
  const auto weights = [](const std::string& path) {
    const ember::SafetensorsFile file = ember::SafetensorsFile::read(path);
    const auto& t = file.tensor("fc1.weight");
    return std::string(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  };
  EXPECT_TRUE(weights(unset) == weights(hundredth));
  EXPECT_FALSE(weights(zero) == weights(unset));
}

TEST_F(TrainDefaultsTest, AResumedRunWritesTheHeaderIntoANewLog) {
  const std::string checkpoint = directory_ + "/resume.safetensors", log = directory_ + "/resumed.csv";
  ASSERT_EQ(train("--epochs 1 --save " + checkpoint).exit_code, 0);
  const CliRun resumed = train("--epochs 2 --resume " + checkpoint + " --save " + checkpoint + " --log " + log);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const std::string csv = ember::testing::file_bytes(log);
  EXPECT_EQ(csv.rfind("epoch,step,learning_rate,", 0), 0u) << csv;
  EXPECT_NE(csv.find("\n2,"), std::string::npos) << csv;
  // Resumed again into the same log: appended, no second header.
  const CliRun again = train("--epochs 3 --resume " + checkpoint + " --save " + checkpoint + " --log " + log);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const std::string both = ember::testing::file_bytes(log);
  EXPECT_EQ(both.find("epoch,", 1), std::string::npos) << both;
  EXPECT_NE(both.find("\n3,"), std::string::npos) << both;
}

TEST_F(TrainDefaultsTest, ThreadsDefaultToTheCoresAvailable) {
  EXPECT_EQ(ember::compute_threads_from("3", 8), 3);
  EXPECT_EQ(ember::compute_threads_from("2,1", 8), 2);
  EXPECT_EQ(ember::compute_threads_from(nullptr, 6), 6);
  EXPECT_EQ(ember::compute_threads_from("", 6), 6);
  EXPECT_EQ(ember::compute_threads_from("zero", 6), 6);
  EXPECT_EQ(ember::compute_threads_from("0", 0), 1);
  EXPECT_EQ(ember::compute_threads_from(nullptr, 500), 64);
  for (const char* threads : {"1", "2"}) {
    const CliRun run = ember::testing::run_ember(
        "train --model seed-cnn --data " + directory_ + " --batch-size 32 --max-steps 1",
        std::string("OMP_NUM_THREADS=") + threads + " ");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const std::string first_line = run.output.substr(0, run.output.find('\n'));
    EXPECT_NE(first_line.find(std::string(threads) + " thread(s)"), std::string::npos) << first_line;
  }
}

TEST_F(TrainDefaultsTest, EveryHelpThatNamesModelsListsEveryBuiltIn) {
  for (const char* command : {"train", "plan", "bench"}) {
    const std::string help = ember::testing::run_ember(std::string(command) + " --help").output;
    for (const std::string& name : ember::builtin_model_names()) {
      EXPECT_NE(help.find(name), std::string::npos) << command << " --help lacks " << name << ":\n" << help;
    }
  }
}

}  // namespace
