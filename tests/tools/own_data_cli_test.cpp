// `ember train` on an image folder and a CSV file from the command line: the data flags
// parse, their errors are usage errors (exit 2) or data errors (exit 1) naming the flag
// or the file, and the decoding progress is printed.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/image_decode.h"
#include "engine/idx.h"
#include "support/file_helpers.h"
#include "support/image_files.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

using testing::contains;
using testing::run_ember;

class OwnDataCli : public testing::TempDirectoryTest {
 protected:
  void write_folder() {
    for (int c = 0; c < 10; ++c) {
      for (int i = 0; i < 3; ++i) {
        std::vector<std::uint8_t> pixels(28 * 28, static_cast<std::uint8_t>(c * 20 + i));
        testing::write_png(path("f/c" + std::to_string(c) + "/" + std::to_string(i) + ".png"), pixels, 1, 28, 28);
      }
    }
  }
};

TEST_F(OwnDataCli, ImageFolderTrainsAndPrintsItsDecoding) {
  write_folder();
  const testing::CliRun run = run_ember("train --data " + path("f") + " --val-split 0.2 --epochs 1 --augment flip --threads 2");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(contains(run.output, "decoding " + path("f") + ": 30/30 images")) << run.output;
  EXPECT_TRUE(contains(run.output, "24 training and 6 test samples")) << run.output;
}

TEST_F(OwnDataCli, BadDataFlagsAreNamed) {
  write_folder();
  const std::string base = "train --data " + path("f") + " --val-split 0.2 --epochs 1 ";
  testing::CliRun run = run_ember(base + "--resize 32");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(contains(run.output, "--resize: expected HEIGHT,WIDTH in pixels (e.g. 32,32), found \"32\"")) << run.output;
  run = run_ember(base + "--mean 0.1,x");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_TRUE(contains(run.output, "--mean: expected numbers separated by commas")) << run.output;
  run = run_ember(base + "--std 0.5,0.5,0.5");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.output, "normalization std: expected 1 value (the model's input has 1 channel), found 3")) << run.output;
  run = run_ember(base + "--convert sepia");
  EXPECT_EQ(run.exit_code, 2);
  run = run_ember(base + "--convert rgb");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.output, "--convert rgb: the model takes 1-channel inputs (1, 28, 28); expected --convert grey")) << run.output;
  run = run_ember(base + "--augment crop:4,blur");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_TRUE(contains(run.output, "augment: item \"blur\": unknown augmentation")) << run.output;
}

// tools/fashion_mnist_to_png.py on IDX files: every image becomes a PNG with the same
// pixels, in the folder of its label, and the tree trains.
TEST_F(OwnDataCli, FashionMnistConverterWritesAFolderThatTrains) {
  std::filesystem::create_directories(path("idx"));
  testing::write_band_dataset(path("idx"), 300, 100);
  const std::string script = std::string(EMBER_TEST_DATA_DIR) + "/../../tools/fashion_mnist_to_png.py";
  ASSERT_EQ(std::system(("python3 " + script + " " + path("png") + " --source " + path("idx") + " > /dev/null").c_str()), 0);
  const IdxArray images = read_idx(path("idx/train-images-idx3-ubyte.gz"), 3);
  const IdxArray labels = read_idx(path("idx/train-labels-idx1-ubyte.gz"), 1);
  const char* names[] = {"t-shirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"};
  for (int i : {0, 1, 299}) {
    const int label = labels.data[static_cast<std::size_t>(i)];
    char file[64];
    std::snprintf(file, sizeof file, "png/train/%d-%s/%05d.png", label, names[label], i);
    const DecodedImage image = decode_image_file(path(file));
    EXPECT_EQ(image.pixels, std::vector<std::uint8_t>(images.data.begin() + i * 784, images.data.begin() + (i + 1) * 784)) << file;
  }
  const testing::CliRun run = run_ember("train --data " + path("png") + " --epochs 1 --threads 2");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(contains(run.output, "300 training and 100 test samples")) << run.output;
}

TEST_F(OwnDataCli, CsvRegressionFromTheCommandLine) {
  std::ofstream(path("reg.json")) << R"({"format": "ember.model", "version": 1, "name": "reg", "input": [2], "loss": "mse",
    "layers": [{"name": "fc", "kind": "linear", "in_features": 2, "out_features": 1}]})";
  {
    std::ofstream csv(path("t.csv"));
    csv << "a,b,y\n";
    for (int i = 0; i < 64; ++i) csv << i % 7 << "," << i % 5 << "," << 0.5 * (i % 7) - (i % 5) << "\n";
  }
  const testing::CliRun run = run_ember("train --model " + path("reg.json") + " --data " + path("t.csv") +
                                        " --val-split 0.25 --standardize --epochs 2 --lr 0.05");
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_TRUE(contains(run.output, "test loss")) << run.output;
  {
    std::ofstream(path("bad.csv")) << "a,b,y\n1,2,3\n4,,6\n";
  }
  const testing::CliRun bad = run_ember("train --model " + path("reg.json") + " --data " + path("bad.csv") + " --val-split 0.5");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(contains(bad.output, path("bad.csv") + ": row 3, column \"b\": missing value; expected a number")) << bad.output;
}

}  // namespace
}  // namespace ember
