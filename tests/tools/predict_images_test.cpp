// `ember predict` on PNG/JPEG files and folders: the same logits as the same pixels from
// an IDX file, class names from the checkpoint, the training run's normalization, and
// errors naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/json_text.h"
#include "support/file_helpers.h"
#include "support/image_files.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

using Json = nlohmann::json;
using testing::contains;
using testing::run_ember;

// A pattern per class and image, so every image gives different logits.
std::vector<std::uint8_t> pattern(int c, int i) {
  std::vector<std::uint8_t> pixels(28 * 28);
  for (std::size_t p = 0; p < pixels.size(); ++p) pixels[p] = static_cast<std::uint8_t>((c * 37 + i * 11 + p * (c + 3)) % 251);
  return pixels;
}

class PredictImages : public testing::TempDirectoryTest {
 protected:
  void SetUp() override {
    testing::TempDirectoryTest::SetUp();
    for (int c = 0; c < 10; ++c) {
      for (int i = 0; i < 2; ++i) {
        for (const char* split : {"train", "test"}) {
          testing::write_png(path(std::string("f/") + split + "/shirt" + std::to_string(c) + "/" + std::to_string(i) + ".png"),
                             pattern(c, i), 1, 28, 28);
        }
      }
    }
    const testing::CliRun train = run_ember("train --data " + path("f") + " --epochs 1 --batch-size 10 --threads 1 --mean 0.3 "
                                            "--std 0.4 --save " + path("model.safetensors"));
    ASSERT_EQ(train.exit_code, 0) << train.output;
  }

  std::vector<Json> predict_json(const std::string& input, const std::string& flags = "") {
    const testing::CliRun run = run_ember("predict --checkpoint " + path("model.safetensors") + " --input " + input +
                                          " --json --threads 1 " + flags);
    EXPECT_EQ(run.exit_code, 0) << run.output;
    std::vector<Json> lines;
    for (std::size_t begin = 0; begin < run.output.size();) {
      const std::size_t end = run.output.find('\n', begin);
      lines.push_back(parse_json(run.output.substr(begin, end - begin), "predict output"));
      begin = end == std::string::npos ? run.output.size() : end + 1;
    }
    return lines;
  }
};

TEST_F(PredictImages, AFolderGivesTheLogitsOfTheSamePixelsFromAnIdxFile) {
  // The folder's files in sorted order: shirt0/0, shirt0/1, shirt1/0, ...
  std::vector<std::uint8_t> images;
  for (int c = 0; c < 10; ++c) {
    for (int i = 0; i < 2; ++i) {
      const std::vector<std::uint8_t> p = pattern(c, i);
      images.insert(images.end(), p.begin(), p.end());
    }
  }
  testing::write_idx(path("images.gz"), {20, 28, 28}, images);
  const std::vector<Json> from_png = predict_json(path("f/test"), "--top 2");
  const std::vector<Json> from_idx = predict_json(path("images.gz"), "--top 2");
  ASSERT_EQ(from_png.size(), 20u);
  ASSERT_EQ(from_idx.size(), 20u);
  for (std::size_t k = 0; k < 20; ++k) {
    EXPECT_EQ(from_png[k]["logits"], from_idx[k]["logits"]) << k;
    EXPECT_EQ(from_png[k]["file"], path("f/test/shirt" + std::to_string(k / 2) + "/" + std::to_string(k % 2) + ".png"));
    EXPECT_TRUE(testing::starts_with(from_png[k]["top"][0]["name"].get<std::string>(), "shirt"));
  }
}

TEST_F(PredictImages, OneFilePrintsItsNameAndTheClassNames) {
  const testing::CliRun run =
      run_ember("predict --checkpoint " + path("model.safetensors") + " --input " + path("f/test/shirt3/1.png") + " --top 3");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(testing::starts_with(run.output, path("f/test/shirt3/1.png") + " shirt")) << run.output;
  EXPECT_EQ(std::count(run.output.begin(), run.output.end(), ':'), 3) << run.output;
}

TEST_F(PredictImages, ImagesThatDoNotFitAreErrorsNamingTheFileAndTheFlag) {
  testing::write_png(path("rgb.png"), std::vector<std::uint8_t>(3 * 28 * 28, 9), 3, 28, 28);
  testing::write_png(path("big.png"), std::vector<std::uint8_t>(30 * 30, 9), 1, 30, 30);
  testing::write_file(path("broken.png"), testing::Bytes{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0});
  std::filesystem::create_directories(path("empty"));
  const std::string predict = "predict --checkpoint " + path("model.safetensors") + " --input ";
  const testing::CliRun rgb = run_ember(predict + path("rgb.png"));
  EXPECT_EQ(rgb.exit_code, 1);
  EXPECT_TRUE(contains(rgb.output, path("rgb.png") + ": the image is RGB (3 channels) but the model takes grey") &&
              contains(rgb.output, "--convert grey")) << rgb.output;
  EXPECT_EQ(run_ember(predict + path("rgb.png") + " --convert grey").exit_code, 0);
  const testing::CliRun big = run_ember(predict + path("big.png"));
  EXPECT_TRUE(contains(big.output, path("big.png") + ": the image is 30x30") && contains(big.output, "--resize")) << big.output;
  EXPECT_EQ(run_ember(predict + path("big.png") + " --resize").exit_code, 0);
  const testing::CliRun broken = run_ember(predict + path("broken.png"));
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_TRUE(contains(broken.output, path("broken.png"))) << broken.output;
  const testing::CliRun empty = run_ember(predict + path("empty"));
  EXPECT_TRUE(contains(empty.output, path("empty") + ": no PNG or JPEG files")) << empty.output;
  EXPECT_EQ(run_ember(predict + path("rgb.png") + " --convert sepia").exit_code, 2);
}

TEST_F(PredictImages, EvalReadsTheTestSplitOfTheFolderTheRunTrainedOn) {
  const testing::CliRun eval = run_ember("eval --checkpoint " + path("model.safetensors") + " --threads 1");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_TRUE(contains(eval.output, " on " + path("f") + " test (20 images): accuracy ")) << eval.output;
  EXPECT_TRUE(contains(eval.output, "shirt7")) << "class names in the per-class lines: " << eval.output;
}

TEST_F(PredictImages, EvalOfACsvRunStandardizesAsTheRunDid) {
  std::string csv = "a,b,label\n";
  for (int i = 0; i < 60; ++i) csv += std::to_string(1000 + i % 2 * 50 + i % 7) + "," + std::to_string(i % 3) + "," + (i % 2 ? "hi" : "lo") + "\n";
  testing::write_file(path("t.csv"), testing::Bytes(csv.begin(), csv.end()));
  testing::write_file(path("mlp.json"), [] {
    const std::string spec = R"({"format": "ember.model", "version": 1, "name": "mlp", "input": [2], "layers": [
      {"name": "fc1", "kind": "linear", "in_features": 2, "out_features": 2}]})";
    return testing::Bytes(spec.begin(), spec.end());
  }());
  const testing::CliRun train = run_ember("train --model " + path("mlp.json") + " --data " + path("t.csv") +
                                          " --val-split 0.25 --standardize --epochs 20 --batch-size 15 --lr 0.05 --threads 1 "
                                          "--save " + path("mlp.safetensors"));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const testing::CliRun eval = run_ember("eval --checkpoint " + path("mlp.safetensors") + " --threads 1");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  // The held-out quarter, standardized with the training split's statistics: separable.
  EXPECT_TRUE(contains(eval.output, " test (15 samples): accuracy 100.00%")) << eval.output << train.output;
  EXPECT_TRUE(contains(eval.output, "hi") && contains(eval.output, "lo")) << eval.output;
}

}  // namespace
}  // namespace ember
