#pragma once
// Running the `ember` binary from tests, and a small MNIST-shaped dataset for it to train on.
#include <sys/wait.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace ember::testing {

struct CliRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string output;  // stdout and stderr
};

// `ember <arguments>` through the shell; `shell_prefix` runs first in the same shell
// (e.g. "ulimit -f 64;").
inline CliRun run_ember(const std::string& arguments, const std::string& shell_prefix = "") {
  CliRun run;
  const std::string command = shell_prefix + std::string(EMBER_CLI_PATH) + " " + arguments + " 2>&1";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

inline std::string file_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

inline void write_idx(const std::string& path, const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data) {
  gzFile file = gzopen(path.c_str(), "wb");
  const std::uint8_t magic[4] = {0, 0, 0x08, static_cast<std::uint8_t>(dims.size())};
  gzwrite(file, magic, 4);
  for (std::uint32_t d : dims) {
    const std::uint8_t be[4] = {static_cast<std::uint8_t>(d >> 24), static_cast<std::uint8_t>(d >> 16),
                                static_cast<std::uint8_t>(d >> 8), static_cast<std::uint8_t>(d)};
    gzwrite(file, be, 4);
  }
  gzwrite(file, data.data(), static_cast<unsigned>(data.size()));
  gzclose(file);
}

// train-* and t10k-* IDX files in `directory`: 28x28 images whose class is a bright band
// at a class-dependent row, so training makes progress in a few steps. With
// `mislabel_every` N > 0, every Nth test label is wrong (the next class), so no model
// scores 100% and a test of the accuracy cannot pass by a constant.
inline void write_band_dataset(const std::string& directory, int train_count, int test_count, int mislabel_every = 0) {
  std::mt19937 random(1);
  for (const auto& [split, count] : {std::pair<std::string, int>{"train", train_count}, {"t10k", test_count}}) {
    std::vector<std::uint8_t> images(static_cast<std::size_t>(count) * 28 * 28), labels(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
      const int label = static_cast<int>(random() % 10);
      const bool mislabeled = split == "t10k" && mislabel_every > 0 && i % mislabel_every == 0;
      labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(mislabeled ? (label + 1) % 10 : label);
      for (int p = 0; p < 28 * 28; ++p) {
        const bool band = p / 28 >= 2 + 2 * label && p / 28 < 4 + 2 * label;
        images[static_cast<std::size_t>(i * 784 + p)] = static_cast<std::uint8_t>(band ? 200 + random() % 56 : random() % 60);
      }
    }
    write_idx(directory + "/" + split + "-images-idx3-ubyte.gz", {static_cast<std::uint32_t>(count), 28, 28}, images);
    write_idx(directory + "/" + split + "-labels-idx1-ubyte.gz", {static_cast<std::uint32_t>(count)}, labels);
  }
}

}  // namespace ember::testing
