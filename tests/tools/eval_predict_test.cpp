// ember eval's per-class accuracy, confusion matrix and --report CSV, and ember predict's
// --json and class names, checked against the checkpoint's logits computed here.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "engine/idx.h"
#include "engine/safetensors.h"
#include "engine/training_state.h"
#include "tools/cli_helpers.h"

namespace {

using ember::testing::CliRun;

CliRun ember_run(const std::string& arguments) { return ember::testing::run_ember(arguments); }

// The checkpoint's logits for the directory's test images (unnormalized: the runs below
// train with mean 0, std 1) and the labels.
struct Expected {
  std::int64_t classes = 0;
  std::vector<float> logits;
  std::vector<std::int32_t> labels;
  std::int64_t predicted(std::size_t i) const {
    const float* row = logits.data() + i * static_cast<std::size_t>(classes);
    return std::max_element(row, row + classes) - row;
  }
};

Expected expected_of(const std::string& checkpoint, const std::string& directory) {
  ember::TrainedModel model = ember::load_trained_model(checkpoint);
  const ember::IdxArray images = ember::read_idx(directory + "/t10k-images-idx3-ubyte.gz", 3);
  const ember::IdxArray labels = ember::read_idx(directory + "/t10k-labels-idx1-ubyte.gz", 1);
  std::vector<float> inputs(images.data.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) inputs[i] = static_cast<float>(images.data[i] / 255.0);
  Expected e;
  e.classes = model.graph->value_shape(model.graph->output()).sample_elements();
  e.logits.resize(static_cast<std::size_t>(images.dims[0] * e.classes));
  ember::Executor executor(*model.graph, *model.parameters, ember::ExecutorOptions{});
  executor.infer(inputs.data(), images.dims[0], e.logits.data());
  for (std::uint8_t label : labels.data) e.labels.push_back(label);
  return e;
}

// A copy of a checkpoint whose run settings name the classes.
void add_class_names(const std::string& from, const std::string& to, const std::vector<std::string>& names) {
  const ember::SafetensorsFile file = ember::SafetensorsFile::read(from);
  std::vector<ember::TensorToWrite> tensors;
  for (const auto& [name, t] : file.tensors()) {
    tensors.push_back({name, t.shape, {reinterpret_cast<const float*>(t.data.data()), t.data.size() / 4}});
  }
  std::map<std::string, std::string> metadata = file.metadata();
  ember::Json run = ember::Json::parse(metadata.at("run"));
  run["class_names"] = names;
  metadata["run"] = run.dump();
  ember::write_safetensors(to, tensors, metadata);
}

class EvalPredictTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/ember-eval-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    ember::testing::write_band_dataset(directory_, 256, 96, /*mislabel_every=*/6);
    checkpoint_ = directory_ + "/model.safetensors";
    const CliRun run = ember_run("train --model seed-cnn --data " + directory_ + " --batch-size 32 --max-steps 4 --save " + checkpoint_);
    ASSERT_EQ(run.exit_code, 0) << run.output;
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + directory_).c_str()); }
  static std::string directory_, checkpoint_;
};
std::string EvalPredictTest::directory_, EvalPredictTest::checkpoint_;

TEST_F(EvalPredictTest, EvalPrintsPerClassAccuracyAndTheConfusionMatrix) {
  const Expected e = expected_of(checkpoint_, directory_);
  std::vector<std::int64_t> confusion(100, 0);
  for (std::size_t i = 0; i < e.labels.size(); ++i) ++confusion[static_cast<std::size_t>(e.labels[i] * 10 + e.predicted(i))];
  const std::string report = directory_ + "/report.csv";
  const CliRun eval = ember_run("eval --checkpoint " + checkpoint_ + " --data " + directory_ + " --report " + report);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("per-class accuracy:"), std::string::npos) << eval.output;
  const std::size_t matrix = eval.output.find("confusion matrix (rows: true class, columns: predicted):\n");
  ASSERT_NE(matrix, std::string::npos) << eval.output;
  std::istringstream rows(eval.output.substr(matrix));
  std::string line;
  std::getline(rows, line);  // title
  std::getline(rows, line);  // column names
  for (int actual = 0; actual < 10; ++actual) {
    ASSERT_TRUE(std::getline(rows, line)) << eval.output;
    std::istringstream fields(line);
    std::int64_t name = -1;
    fields >> name;
    EXPECT_EQ(name, actual) << line;
    for (int predicted = 0; predicted < 10; ++predicted) {
      std::int64_t n = -1;
      fields >> n;
      EXPECT_EQ(n, confusion[static_cast<std::size_t>(actual * 10 + predicted)]) << "row " << actual << ": " << line;
    }
  }
  const std::string csv = ember::testing::file_bytes(report);
  EXPECT_EQ(csv.rfind("class,samples,correct,accuracy,predicted 0,predicted 1,", 0), 0u) << csv;
  std::istringstream csv_rows(csv);
  std::getline(csv_rows, line);
  for (int actual = 0; actual < 10; ++actual) {
    ASSERT_TRUE(std::getline(csv_rows, line)) << csv;
    std::int64_t samples = 0;
    for (int p = 0; p < 10; ++p) samples += confusion[static_cast<std::size_t>(actual * 10 + p)];
    const std::int64_t correct = confusion[static_cast<std::size_t>(actual * 11)];
    EXPECT_EQ(line.rfind(std::to_string(actual) + "," + std::to_string(samples) + "," + std::to_string(correct) + ",", 0), 0u)
        << line;
  }
}

TEST_F(EvalPredictTest, EvalUsesClassNamesAndRefusesAReportForRegression) {
  const std::string named = directory_ + "/named.safetensors";
  const std::vector<std::string> names{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  add_class_names(checkpoint_, named, names);
  const CliRun eval = ember_run("eval --checkpoint " + named + " --data " + directory_);
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("  seven "), std::string::npos) << eval.output;
  const CliRun predict = ember_run("predict --checkpoint " + named + " --input " + directory_ + "/t10k-images-idx3-ubyte.gz --limit 3 --json");
  ASSERT_EQ(predict.exit_code, 0) << predict.output;
  const ember::Json first = ember::Json::parse(predict.output.substr(0, predict.output.find('\n')));
  EXPECT_EQ(first["top"][0]["name"], names[first["top"][0]["class"].get<std::size_t>()]);
  const std::string mse = directory_ + "/mse.safetensors";
  ASSERT_EQ(ember_run("train --model attention-mse --max-steps 2 --train-limit 64 --test-limit 32 --save " + mse).exit_code, 0);
  const CliRun refused = ember_run("eval --checkpoint " + mse + " --report " + directory_ + "/mse.csv");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("--report: " + mse + " is a regression model (mse)"), std::string::npos) << refused.output;
}

TEST_F(EvalPredictTest, PredictJsonPrintsTheTopClassesAndTheLogits) {
  const Expected e = expected_of(checkpoint_, directory_);
  const CliRun predict = ember_run("predict --checkpoint " + checkpoint_ + " --input " + directory_ + "/t10k-images-idx3-ubyte.gz --top 2 --json");
  ASSERT_EQ(predict.exit_code, 0) << predict.output;
  std::istringstream lines(predict.output);
  std::string line;
  std::size_t count = 0;
  while (std::getline(lines, line)) {
    const ember::Json object = ember::Json::parse(line);
    EXPECT_EQ(object["index"].get<std::size_t>(), count);
    ASSERT_EQ(object["logits"].size(), 10u) << line;
    for (std::size_t c = 0; c < 10; ++c) {
      EXPECT_NEAR(object["logits"][c].get<double>(), e.logits[count * 10 + c], 1e-5) << line;
    }
    ASSERT_EQ(object["top"].size(), 2u) << line;
    EXPECT_EQ(object["top"][0]["class"].get<std::int64_t>(), e.predicted(count)) << line;
    EXPECT_EQ(object["top"][0]["name"], std::to_string(e.predicted(count))) << line;
    ++count;
  }
  EXPECT_EQ(count, e.labels.size());
}

}  // namespace
