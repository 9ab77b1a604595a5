// Training from the user's own data (engine/data_source.h): an image folder trains to the
// same bits as the IDX files it was converted from; RGB folders train a 3-channel CNN;
// CSV tables train an MLP classifier and a regression model; every data set is checked
// against the model before training, with messages naming the problem.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/trainer.h"
#include "engine/training_state.h"
#include "support/file_helpers.h"
#include "support/image_files.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

class Collect final : public TrainingObserver {
 public:
  void on_epoch(const EpochReport& r) override { reports.push_back(r); }
  void on_data(const std::string& message) override { data.push_back(message); }
  std::vector<EpochReport> reports;
  std::vector<std::string> data;
};

std::vector<EpochReport> run(TrainOptions options) {
  Collect observer;
  train(options, observer);
  return observer.reports;
}

class OwnData : public testing::TempDirectoryTest {
 protected:
  void write_spec(const std::string& name, const std::string& json) {
    std::ofstream(path(name)) << json;
  }
};

// 28x28 grey samples of 10 classes, in class order (as ImageFolder lists them), written
// both as IDX files and as a folder tree: the two must train to the same bits.
TEST_F(OwnData, ImageFolderTrainsToTheSameBitsAsIdx) {
  std::mt19937 random(3);
  fs::create_directories(path("idx"));
  for (const auto& [split, idx_prefix, count] : {std::tuple{"train", "train", 40}, std::tuple{"test", "t10k", 20}}) {
    std::vector<std::uint8_t> images, labels;
    for (int label = 0; label < 10; ++label) {
      for (int i = 0; i < count / 10; ++i) {
        std::vector<std::uint8_t> pixels(28 * 28);
        for (auto& p : pixels) p = static_cast<std::uint8_t>(random() % 64);
        for (int x = 0; x < 28; ++x) pixels[static_cast<std::size_t>((label * 2 + 4) * 28 + x)] = 250;
        images.insert(images.end(), pixels.begin(), pixels.end());
        labels.push_back(static_cast<std::uint8_t>(label));
        char name[64];
        std::snprintf(name, sizeof name, "folder/%s/class-%d/%05d.png", split, label, i);
        testing::write_png(path(name), pixels, 1, 28, 28);
      }
    }
    testing::write_idx(path(std::string("idx/") + idx_prefix + "-images-idx3-ubyte.gz"), {static_cast<std::uint32_t>(count), 28, 28}, images);
    testing::write_idx(path(std::string("idx/") + idx_prefix + "-labels-idx1-ubyte.gz"), {static_cast<std::uint32_t>(count)}, labels);
  }
  TrainOptions options;
  options.model = "seed-cnn";
  options.epochs = 2;
  options.batch_size = 8;
  options.mean = {0.2};
  options.std = {0.3};
  options.seed = 5;
  options.threads = 2;
  options.data = path("idx");
  const std::vector<EpochReport> from_idx = run(options);
  options.data = path("folder");
  options.save = path("folder.safetensors");
  const std::vector<EpochReport> from_folder = run(options);
  ASSERT_EQ(from_idx.size(), 2u);
  ASSERT_EQ(from_folder.size(), 2u);
  for (std::size_t e = 0; e < 2; ++e) {
    EXPECT_EQ(from_idx[e].train_loss, from_folder[e].train_loss) << e;
    EXPECT_EQ(from_idx[e].test_loss, from_folder[e].test_loss) << e;
    EXPECT_EQ(from_idx[e].test_accuracy, from_folder[e].test_accuracy) << e;
  }
  const TrainedModel model = load_trained_model(path("folder.safetensors"));
  EXPECT_EQ(model.run["class_names"][0], "class-0");
  EXPECT_EQ(model.run["class_names"].size(), 10u);
}

TEST_F(OwnData, IdxDataRefusesFolderAndTableOptions) {
  fs::create_directories(path("idx"));
  testing::write_band_dataset(path("idx"), 20, 10);
  TrainOptions options;
  options.data = path("idx");
  options.data_options.val_split = 0.1;
  EXPECT_EQ(error_of([&] { run(options); }), "--val-split: " + path("idx") +
                                                " is an IDX dataset with its own test split and image size; --val-split applies to "
                                                "image folders and CSV files");
  options.data_options.val_split = 0.0;
  options.data_options.augment = "flip";  // augmentation works on IDX data too
  options.epochs = 1;
  EXPECT_EQ(run(options).size(), 1u);
}

const char* const rgb_cnn = R"({
  "format": "ember.model", "version": 1, "name": "rgb-cnn", "input": [3, 8, 8],
  "layers": [
    {"name": "conv1", "kind": "conv2d", "in_channels": 3, "out_channels": 8, "kernel": 3, "padding": 1},
    {"name": "relu1", "kind": "relu"},
    {"name": "pool1", "kind": "max_pool2d", "kernel": 2},
    {"name": "flatten", "kind": "flatten"},
    {"name": "fc", "kind": "linear", "in_features": 128, "out_features": 3}
  ]
})";

// Class c is a colour: the red, green or blue plane is bright. Half the files are JPEG.
void write_colour_folder(const std::string& root, int per_class, int size, std::mt19937& random) {
  const char* names[] = {"blue", "green", "red"};
  for (int c = 0; c < 3; ++c) {
    const int plane = c == 0 ? 2 : c == 1 ? 1 : 0;
    for (int i = 0; i < per_class; ++i) {
      std::vector<std::uint8_t> pixels(static_cast<std::size_t>(3 * size * size));
      for (auto& p : pixels) p = static_cast<std::uint8_t>(random() % 80);
      for (int k = 0; k < size * size; ++k) pixels[static_cast<std::size_t>(plane * size * size + k)] = static_cast<std::uint8_t>(180 + random() % 60);
      const std::string file = root + "/" + names[c] + "/" + std::to_string(i);
      if (i % 2 == 0) {
        testing::write_png(file + ".png", pixels, 3, size, size);
      } else {
        testing::write_jpeg(file + ".jpg", pixels, 3, size, size);
      }
    }
  }
}

TEST_F(OwnData, RgbFolderTrainsAThreeChannelCnnWithAugmentationAndAValidationSplit) {
  std::mt19937 random(4);
  write_colour_folder(path("colours"), 30, 8, random);
  write_spec("rgb.json", rgb_cnn);
  TrainOptions options;
  options.model = path("rgb.json");
  options.data = path("colours");
  options.data_options.val_split = 0.2;
  options.data_options.augment = "crop:2,flip";
  options.mean = {0.5, 0.5, 0.5};
  options.std = {0.25, 0.25, 0.25};
  options.epochs = 6;
  options.batch_size = 8;
  options.learning_rate = 3e-3;
  const std::vector<EpochReport> reports = run(options);
  EXPECT_GE(reports.back().test_accuracy, 0.9);
  EXPECT_EQ(run(options).back().test_loss, reports.back().test_loss);  // seeded: reproducible
  options.threads = 2;
  EXPECT_EQ(run(options).back().train_loss, reports.back().train_loss);  // whatever the thread count
}

// The class names kept in the checkpoint do not stop --resume, and the resumed run ends
// where an uninterrupted one does; another --augment is another run.
TEST_F(OwnData, FolderRunResumesToTheSameBits) {
  std::mt19937 random(5);
  write_colour_folder(path("colours"), 8, 8, random);
  write_spec("rgb.json", rgb_cnn);
  TrainOptions options;
  options.model = path("rgb.json");
  options.data = path("colours");
  options.data_options.val_split = 0.25;
  options.data_options.augment = "crop:1,flip";
  options.batch_size = 4;
  options.epochs = 2;
  const std::vector<EpochReport> whole = run(options);
  options.epochs = 1;
  options.save = path("one.safetensors");
  run(options);
  options.epochs = 2;
  options.resume = path("one.safetensors");
  options.save = "";
  const std::vector<EpochReport> resumed = run(options);
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0].train_loss, whole[1].train_loss);
  EXPECT_EQ(resumed[0].test_loss, whole[1].test_loss);
  options.data_options.augment = "flip";
  EXPECT_TRUE(testing::contains(error_of([&] { run(options); }), "--resume continues only the same run"));
}

TEST_F(OwnData, ImageFolderProblemsAreNamedBeforeTraining) {
  std::mt19937 random(4);
  write_colour_folder(path("c/train"), 2, 8, random);
  write_colour_folder(path("c/test"), 2, 8, random);
  fs::rename(path("c/test/red"), path("c/test/yellow"));
  write_spec("rgb.json", rgb_cnn);
  TrainOptions options;
  options.model = path("rgb.json");
  options.data = path("c");
  EXPECT_EQ(error_of([&] { run(options); }), path("c/test") + ": the classes (blue, green, yellow) differ from those of " +
                                                path("c/train") + " (blue, green, red); both splits need the same class folders");
  fs::rename(path("c/test/yellow"), path("c/test/red"));
  options.mean = {0.1, 0.2};
  EXPECT_EQ(error_of([&] { run(options); }), "normalization mean: expected 1 value or 3 (one per channel), found 2");
  options.mean = {0.0};
  options.data_options.augment = "crop:4,spin";
  EXPECT_TRUE(testing::starts_with(error_of([&] { run(options); }), "augment: item \"spin\": unknown augmentation"));
  options.data_options.augment = "";
  options.model = "seed-cnn";  // grey 28x28, 10 classes
  EXPECT_TRUE(testing::contains(error_of([&] { run(options); }), "the image is RGB (3 channels) but the model takes grey (1 channel)"));
  options.data_options.convert = "grey";
  EXPECT_TRUE(testing::contains(error_of([&] { run(options); }), "the image is 8x8 (height x width) but the model takes 28x28"));
  options.data_options.resize_height = options.data_options.resize_width = 28;
  EXPECT_EQ(error_of([&] { run(options); }), path("c/train") + ": 3 classes (blue, green, red) but the model has 10 outputs; a model for it has one output per class");
  options.data = path("c/train");
  EXPECT_TRUE(testing::starts_with(error_of([&] { run(options); }), path("c/train") + ": no test split"));
}

const char* const mlp = R"({
  "format": "ember.model", "version": 1, "name": "mlp", "input": [4],
  "layers": [
    {"name": "fc1", "kind": "linear", "in_features": 4, "out_features": 16},
    {"name": "relu", "kind": "relu"},
    {"name": "fc2", "kind": "linear", "in_features": 16, "out_features": OUTPUTS}
  ]LOSS
})";

std::string mlp_spec(int outputs, bool regression) {
  std::string s = mlp;
  s.replace(s.find("OUTPUTS"), 7, std::to_string(outputs));
  s.replace(s.find("LOSS"), 4, regression ? ", \"loss\": \"mse\"" : "");
  return s;
}

// Four features; the class is which of the first three is largest; the target a linear
// function of them. Feature d is on a large scale (standardization matters).
void write_table(const std::string& file, int rows, bool regression, std::mt19937& random) {
  std::ofstream out(file);
  out << "a,b,c,d," << (regression ? "y" : "kind") << "\n";
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const char* names[] = {"alpha", "beta", "gamma"};
  for (int r = 0; r < rows; ++r) {
    const double a = u(random), b = u(random), c = u(random), d = 1000.0 + 100.0 * u(random);
    out << a << "," << b << "," << c << "," << d << ",";
    if (regression) {
      out << 2.0 * a - b + 0.5 * c + (d - 1000.0) / 100.0 << "\n";
    } else {
      out << names[a > b && a > c ? 0 : b > c ? 1 : 2] << "\n";
    }
  }
}

TEST_F(OwnData, CsvTrainsAnMlpClassifierWithStandardization) {
  std::mt19937 random(6);
  write_table(path("train.csv"), 600, false, random);
  write_table(path("test.csv"), 200, false, random);
  write_spec("mlp.json", mlp_spec(3, false));
  TrainOptions options;
  options.model = path("mlp.json");
  options.data = path("train.csv");
  options.data_options.test_data = path("test.csv");
  options.data_options.standardize = true;
  options.epochs = 15;
  options.batch_size = 32;
  options.learning_rate = 1e-2;
  options.save = path("mlp.safetensors");
  EXPECT_GE(run(options).back().test_accuracy, 0.9);
  const TrainedModel model = load_trained_model(path("mlp.safetensors"));
  EXPECT_EQ(model.run["class_names"], Json({"alpha", "beta", "gamma"}));
  EXPECT_NEAR(model.run["feature_mean"][3].get<double>(), 1000.0, 10.0);
  EXPECT_EQ(model.run["standardize"], true);
}

TEST_F(OwnData, CsvTrainsARegressionModel) {
  std::mt19937 random(7);
  write_table(path("r.csv"), 800, true, random);
  write_spec("reg.json", mlp_spec(1, true));
  TrainOptions options;
  options.model = path("reg.json");
  options.data = path("r.csv");
  options.data_options.val_split = 0.25;
  options.data_options.standardize = true;
  options.epochs = 20;
  options.batch_size = 32;
  options.learning_rate = 1e-2;
  const std::vector<EpochReport> reports = run(options);
  EXPECT_TRUE(std::isnan(reports.back().test_accuracy));
  EXPECT_LT(reports.back().test_loss, 0.05 * reports.front().train_loss);
  EXPECT_LT(reports.back().test_loss, 0.05);
}

// Two target columns, two outputs: y and a second linear function z of the features.
TEST_F(OwnData, CsvTrainsARegressionModelWithTwoTargets) {
  std::mt19937 random(9);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  {
    std::ofstream out(path("two.csv"));
    out << "z,a,b,y\n";
    for (int r = 0; r < 600; ++r) {
      const double a = u(random), b = u(random);
      out << a - 2.0 * b << "," << a << "," << b << "," << 0.5 * a + b << "\n";
    }
  }
  std::string spec = mlp_spec(2, true);
  spec.replace(spec.find("\"input\": [4]"), 12, "\"input\": [2]");
  spec.replace(spec.find("\"in_features\": 4"), 16, "\"in_features\": 2");
  write_spec("two.json", spec);
  TrainOptions options;
  options.model = path("two.json");
  options.data = path("two.csv");
  options.data_options.label_column = "y,z";
  options.data_options.val_split = 0.25;
  options.epochs = 20;
  options.batch_size = 32;
  options.learning_rate = 1e-2;
  EXPECT_LT(run(options).back().test_loss, 0.02);
  options.data_options.label_column = "y";
  EXPECT_EQ(error_of([&] { run(options); }), path("two.csv") + ": 2 problems:\n  " + path("two.csv") +
                                                ": 3 feature columns (z, a, b) but the model takes inputs (2,); a model for it takes (3,)\n  " +
                                                path("two.csv") + ": 1 target column(s) but the model has 2 outputs; a regression model for it has one output per target column");
}

TEST_F(OwnData, CsvProblemsAreNamedBeforeTraining) {
  std::mt19937 random(8);
  write_table(path("t.csv"), 20, false, random);
  write_spec("mlp.json", mlp_spec(3, false));
  write_spec("wide.json", mlp_spec(5, false));
  TrainOptions options;
  options.model = path("mlp.json");
  options.data = path("t.csv");
  EXPECT_EQ(error_of([&] { run(options); }), path("t.csv") + ": no test split: pass --test-data FILE.csv or --val-split F to hold out a fraction F of the rows");
  options.data_options.val_split = 0.5;
  options.data_options.label_column = "label";
  EXPECT_EQ(error_of([&] { run(options); }), path("t.csv") + ": no column \"label\" for the labels; the columns are a, b, c, d, kind");
  options.data_options.label_column = "";
  options.data = path("none.csv");
  EXPECT_EQ(error_of([&] { run(options); }), path("none.csv") + ": cannot open the CSV file");
  options.data = path("t.csv");
  options.model = path("wide.json");
  EXPECT_EQ(error_of([&] { run(options); }), path("t.csv") + ": 3 classes (alpha, beta, gamma) but the model has 5 outputs; a model for it has one output per class");
  options.model = "seed-cnn";
  EXPECT_EQ(error_of([&] { run(options); }),
            path("t.csv") + ": 2 problems:\n  " + path("t.csv") + ": 4 feature columns (a, b, c, d) but the model takes inputs (1, 28, 28); a model for it takes (4,)\n  " +
                path("t.csv") + ": 3 classes (alpha, beta, gamma) but the model has 10 outputs; a model for it has one output per class");
}

}  // namespace
}  // namespace ember
