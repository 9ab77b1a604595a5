// Decoding an image folder (engine/image_folder.h) into the uint8 Dataset: PNG decode,
// checks and copy, on 1 and 2 threads, wall time (the cache is off). The folder is
// 10000 28x28 grey PNGs: Fashion-MNIST's first training images when Debian's
// dataset-fashion-mnist is installed (what tools/fashion_mnist_to_png.py writes, with
// zlib level 6), else a synthetic texture; written once to a temporary folder.
// EMBER_DECODE_BENCH_DIR=DIR decodes an existing folder of 28x28 grey images instead.
//   ember_bench --benchmark_filter=^image_folder_decode
#include <benchmark/benchmark.h>
#include <png.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/image_folder.h"

namespace ember {
namespace {

constexpr int image_count = 10000;

void write_grey_png(const std::string& file, const std::uint8_t* pixels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = 28;
  image.height = 28;
  image.format = PNG_FORMAT_GRAY;
  png_image_write_to_file(&image, file.c_str(), 0, pixels, 0, nullptr);
}

std::string bench_folder() {
  if (const char* given = std::getenv("EMBER_DECODE_BENCH_DIR")) return given;
  static const std::string folder = [] {
    const std::string root = (std::filesystem::temp_directory_path() / ("ember-decode-bench-" + std::to_string(::getpid()))).string();
    Dataset source;
    try {
      source = load_dataset("fashion-mnist", Split::train, image_count);
    } catch (const std::exception&) {
      source.count = image_count;
      source.images.resize(static_cast<std::size_t>(image_count) * 784);
      source.labels.resize(image_count);
      for (std::size_t i = 0; i < source.images.size(); ++i) source.images[i] = static_cast<std::uint8_t>((i * i) % 97 < 40 ? i % 256 : 0);
      for (int i = 0; i < image_count; ++i) source.labels[static_cast<std::size_t>(i)] = i % 10;
    }
    for (int c = 0; c < 10; ++c) std::filesystem::create_directories(root + "/" + std::to_string(c));
    for (std::int64_t i = 0; i < source.count; ++i) {
      write_grey_png(root + "/" + std::to_string(source.labels[static_cast<std::size_t>(i)]) + "/" + std::to_string(i) + ".png",
                     source.images.data() + i * 784);
    }
    std::atexit([] { std::filesystem::remove_all((std::filesystem::temp_directory_path() / ("ember-decode-bench-" + std::to_string(::getpid())))); });
    return root;
  }();
  return folder;
}

void image_folder_decode(benchmark::State& state) {
  const std::string folder = bench_folder();
  ImageFolderFormat format;
  format.channels = 1;
  format.height = 28;
  format.width = 28;
  format.threads = static_cast<int>(state.range(0));
  format.cache_limit = ~std::size_t{0};
  std::int64_t images = 0;
  for (auto _ : state) {
    const ImageFolderSet set = load_image_folder(folder, format);
    images += set.dataset.count;
    benchmark::DoNotOptimize(set.dataset.images.data());
  }
  state.counters["images_per_second"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
}
BENCHMARK(image_folder_decode)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace ember
