// Image decoding (libpng, libjpeg-turbo), the bilinear resize against a scalar
// reference, channel conversion, augmentation, and image folders: their order, errors,
// parallel decoding and the decoded-image cache.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <set>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/augment.h"
#include "engine/dataset.h"
#include "engine/image_decode.h"
#include "engine/image_folder.h"
#include "support/file_helpers.h"
#include "support/image_files.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::contains;
using testing::error_of;

Bytes pattern(std::size_t n, int salt) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>((i * 37 + static_cast<std::size_t>(salt) * 11) % 251);
  return out;
}

class ImageFiles : public testing::TempDirectoryTest {};

TEST_F(ImageFiles, PngRoundTripsGreyAndRgb) {
  for (int channels : {1, 3}) {
    const Bytes pixels = pattern(static_cast<std::size_t>(channels * 5 * 7), channels);
    testing::write_png(path("a.png"), pixels, channels, 5, 7);
    const DecodedImage image = decode_image_file(path("a.png"));
    EXPECT_EQ(image.channels, channels);
    EXPECT_EQ(image.height, 5);
    EXPECT_EQ(image.width, 7);
    EXPECT_EQ(image.pixels, pixels);
  }
}

// Alpha is dropped, not composed onto a background: PIL's convert("RGB").
TEST_F(ImageFiles, AlphaIsDropped) {
  for (const auto& [format, channels] : {std::pair{PNG_FORMAT_RGBA, 3}, std::pair{PNG_FORMAT_GA, 1}}) {
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    image.width = 2;
    image.height = 1;
    image.format = format;
    const Bytes rgba{200, 100, 50, 128, 10, 20, 30, 0}, ga{200, 128, 10, 0};
    ASSERT_NE(png_image_write_to_file(&image, path("a.png").c_str(), 0, (channels == 3 ? rgba : ga).data(), 0, nullptr), 0);
    const DecodedImage decoded = decode_image_file(path("a.png"));
    EXPECT_EQ(decoded.channels, channels);
    EXPECT_EQ(decoded.pixels, channels == 3 ? (Bytes{200, 10, 100, 20, 50, 30}) : (Bytes{200, 10}));
  }
}

TEST_F(ImageFiles, JpegDecodesGreyAndRgbCloseToTheOriginal) {
  for (int channels : {1, 3}) {
    Bytes pixels(static_cast<std::size_t>(channels * 16 * 16), 0);
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(64 + (i % 16) * 4);  // smooth
    testing::write_jpeg(path("a.jpg"), pixels, channels, 16, 16, 100);
    const DecodedImage image = decode_image_file(path("a.jpg"));
    ASSERT_EQ(image.channels, channels);
    ASSERT_EQ(image.pixels.size(), pixels.size());
    for (std::size_t i = 0; i < pixels.size(); ++i) EXPECT_NEAR(image.pixels[i], pixels[i], 6) << i;
  }
}

TEST_F(ImageFiles, CorruptPngIsNamed) {
  testing::write_png(path("a.png"), pattern(64 * 64, 1), 1, 64, 64);
  Bytes bytes = testing::read_file(path("a.png"));
  for (std::size_t i = 60; i < bytes.size() - 20; i += 7) bytes[i] ^= 0x5a;  // the image data
  testing::write_file(path("bad.png"), bytes);
  EXPECT_TRUE(testing::starts_with(error_of([&] { decode_image_file(path("bad.png")); }), path("bad.png") + ": corrupt"));
}

TEST_F(ImageFiles, TruncatedPngAndJpegAreNamed) {
  testing::write_png(path("a.png"), pattern(64 * 64, 1), 1, 64, 64);
  testing::write_jpeg(path("a.jpg"), pattern(3 * 64 * 64, 2), 3, 64, 64);
  for (const std::string name : {"a.png", "a.jpg"}) {
    Bytes bytes = testing::read_file(path(name));
    bytes.resize(bytes.size() / 2);
    testing::write_file(path("cut-" + name), bytes);
    const std::string message = error_of([&] { decode_image_file(path("cut-" + name)); });
    EXPECT_TRUE(testing::starts_with(message, path("cut-" + name) + ": corrupt or truncated ")) << message;
  }
}

TEST_F(ImageFiles, NotAnImageIsNamed) {
  testing::write_file(path("a.png"), Bytes{'h', 'e', 'l', 'l', 'o'});
  EXPECT_EQ(error_of([&] { decode_image_file(path("a.png")); }),
            path("a.png") + ": not a PNG or JPEG file (its first bytes are neither signature)");
  EXPECT_EQ(error_of([&] { decode_image_file(path("none.png")); }), path("none.png") + ": cannot open the image");
}

// PyTorch's interpolate(mode="bilinear", align_corners=False) written out per pixel.
std::uint8_t bilinear_reference(const Bytes& in, int h, int w, int oh, int ow, int y, int x) {
  auto source = [](int o, int in_size, int out_size) {
    const double s = (o + 0.5) * in_size / out_size - 0.5;
    return s < 0 ? 0.0 : s;
  };
  const double sy = source(y, h, oh), sx = source(x, w, ow);
  const int y0 = std::min(static_cast<int>(sy), h - 1), x0 = std::min(static_cast<int>(sx), w - 1);
  const int y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const double ly = sy - y0, lx = sx - x0;
  const double v = (1 - ly) * (1 - lx) * in[y0 * w + x0] + (1 - ly) * lx * in[y0 * w + x1] + ly * (1 - lx) * in[y1 * w + x0] +
                   ly * lx * in[y1 * w + x1];
  return static_cast<std::uint8_t>(std::floor(v + 0.5));
}

TEST(ResizeBilinear, MatchesTheScalarReference) {
  for (auto [h, w, oh, ow] : {std::array{5, 7, 11, 3}, std::array{28, 28, 32, 32}, std::array{32, 30, 28, 28}, std::array{1, 4, 3, 9}}) {
    const Bytes in = pattern(static_cast<std::size_t>(2 * h * w), h);
    const Bytes out = resize_bilinear(in, 2, h, w, oh, ow);
    for (int c = 0; c < 2; ++c) {
      const Bytes plane(in.begin() + c * h * w, in.begin() + (c + 1) * h * w);
      for (int y = 0; y < oh; ++y) {
        for (int x = 0; x < ow; ++x) {
          ASSERT_EQ(out[static_cast<std::size_t>((c * oh + y) * ow + x)], bilinear_reference(plane, h, w, oh, ow, y, x))
              << h << "x" << w << " -> " << oh << "x" << ow << " at " << c << "," << y << "," << x;
        }
      }
    }
  }
}

TEST(ResizeBilinear, KnownValuesAndIdentity) {
  EXPECT_EQ(resize_bilinear(Bytes{0, 100}, 1, 1, 2, 1, 4), (Bytes{0, 25, 75, 100}));  // torch: 0, 25, 75, 100
  const Bytes in = pattern(30, 3);
  EXPECT_EQ(resize_bilinear(in, 1, 5, 6, 5, 6), in);
}

TEST(ConvertChannels, GreyToRgbRepeatsAndRgbToGreyIsLuma) {
  const DecodedImage grey{1, 1, 2, {10, 200}};
  EXPECT_EQ(convert_channels(grey, 3).pixels, (Bytes{10, 200, 10, 200, 10, 200}));
  const DecodedImage rgb{3, 1, 2, {255, 0, 0, 255, 0, 0}};  // red, green
  EXPECT_EQ(convert_channels(rgb, 1).pixels, (Bytes{76, 150}));  // 0.299 * 255, 0.587 * 255
}

TEST(Augment, BadSpecNamesTheItem) {
  EXPECT_EQ(error_of([] { parse_augment_spec("crop:4,rotate"); }),
            "augment: item \"rotate\": unknown augmentation (known: crop:P with P a padding in pixels, flip or flip:Q with Q a probability)");
  EXPECT_TRUE(testing::starts_with(error_of([] { parse_augment_spec("crop:x"); }), "augment: item \"crop:x\": expected a number"));
  EXPECT_TRUE(testing::starts_with(error_of([] { parse_augment_spec("crop:0"); }), "augment: item \"crop:0\": the padding must"));
  EXPECT_TRUE(testing::starts_with(error_of([] { parse_augment_spec("flip:2"); }), "augment: item \"flip:2\": the probability"));
  const AugmentSpec spec = parse_augment_spec("crop:4,flip");
  EXPECT_EQ(spec.crop_padding, 4);
  EXPECT_EQ(spec.flip_probability, 0.5);
  EXPECT_TRUE(parse_augment_spec("").empty());
}

TEST(Augment, FlipReversesEveryRow) {
  Bytes pixels{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // 2 channels x 2 x 3
  Augmenter(parse_augment_spec("flip:1"), 0).apply(pixels.data(), 2, 2, 3, 0, 0);
  EXPECT_EQ(pixels, (Bytes{3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10}));
}

// A crop is the image shifted by (dy, dx) in [-P, P] with zeros shifted in; the offsets
// over many samples cover the whole range, and each sample's is fixed by (seed, epoch, index).
TEST(Augment, CropIsAZeroFilledShiftSeededBySampleAndEpoch) {
  const int h = 6, w = 5, p = 2;
  const Bytes original = [] { Bytes b(6 * 5); for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i + 1); return b; }();
  const Augmenter augmenter(parse_augment_spec("crop:2"), 7);
  std::set<std::pair<int, int>> shifts;
  for (std::int64_t sample = 0; sample < 400; ++sample) {
    Bytes pixels = original;
    augmenter.apply(pixels.data(), 1, h, w, 3, sample);
    Bytes again = original;
    augmenter.apply(again.data(), 1, h, w, 3, sample);
    ASSERT_EQ(pixels, again);
    bool found = false;
    for (int dy = -p; dy <= p && !found; ++dy) {
      for (int dx = -p; dx <= p && !found; ++dx) {
        bool same = true;
        for (int y = 0; y < h; ++y) {
          for (int x = 0; x < w; ++x) {
            const int sy = y + dy, sx = x + dx;
            const int expected = sy < 0 || sy >= h || sx < 0 || sx >= w ? 0 : original[static_cast<std::size_t>(sy * w + sx)];
            same = same && pixels[static_cast<std::size_t>(y * w + x)] == expected;
          }
        }
        if (same) shifts.insert({dy, dx}), found = true;
      }
    }
    ASSERT_TRUE(found) << "sample " << sample << " is not a shifted copy";
  }
  EXPECT_EQ(shifts.size(), 25u);
  Bytes epoch3 = original, epoch4 = original;
  int differ = 0;
  for (std::int64_t sample = 0; sample < 20; ++sample) {
    epoch3 = original, epoch4 = original;
    augmenter.apply(epoch3.data(), 1, h, w, 3, sample);
    augmenter.apply(epoch4.data(), 1, h, w, 4, sample);
    differ += epoch3 != epoch4;
  }
  EXPECT_GT(differ, 10);
}

// Each sample is augmented the same whatever batch it lands in.
TEST(Augment, BatchLoaderAugmentsBySampleNotByBatch) {
  Dataset d;
  d.source = "test";
  d.count = 10;
  d.height = 4;
  d.width = 4;
  d.images = pattern(160, 5);
  d.labels.assign(10, 0);
  const ImageFormat format = image_format_for(Shape({1, 4, 4}), d, 0.0, 1.0);
  const Augmenter augmenter(parse_augment_spec("crop:1,flip"), 3);
  BatchLoader whole(d, format, 10, 9, false, &augmenter), pairs(d, format, 2, 9, false, &augmenter);
  std::vector<float> all(160), two(160);
  std::vector<std::int32_t> labels(10);
  whole.load(2, 0, all.data(), labels.data());
  for (int b = 0; b < 5; ++b) pairs.load(2, b, two.data() + b * 32, labels.data());
  EXPECT_EQ(all, two);
  std::vector<float> plain(160);
  BatchLoader(d, format, 10, 9, false).load(2, 0, plain.data(), labels.data());
  EXPECT_NE(all, plain);
}

TEST(Normalization, PerChannelMeanAndStd) {
  Dataset d;
  d.source = "rgb";
  d.count = 1;
  d.channels = 3;
  d.height = 1;
  d.width = 1;
  d.images = {255, 0, 51};
  d.labels = {0};
  const ImageFormat format = image_format_for(Shape({3, 1, 1}), d, {0.5, 0.25, 0.2}, {0.5, 0.25, 0.1});
  std::vector<float> x(3);
  std::vector<std::int32_t> label(1);
  BatchLoader(d, format, 1, 0, false).load(0, 0, x.data(), label.data());
  EXPECT_NEAR(x[0], 1.0f, 1e-6);
  EXPECT_NEAR(x[1], -1.0f, 1e-6);
  EXPECT_NEAR(x[2], 0.0f, 1e-6);
  EXPECT_EQ(error_of([&] { image_format_for(Shape({3, 1, 1}), d, {0.5, 0.5}, {1.0}); }),
            "normalization mean: expected 1 value or 3 (one per channel), found 2");
  EXPECT_TRUE(testing::starts_with(error_of([&] { image_format_for(Shape({1, 1, 1}), d, {0.0}, {1.0}); }),
                                   "the model takes inputs (1, 1, 1) but rgb holds 1x1 RGB images; a model for it takes (3, H, W)"));
}

class ImageFolders : public testing::TempDirectoryTest {
 protected:
  // classes x per_class grey 6x5 PNGs under `root`.
  void write_folder(const std::string& root, const std::vector<std::string>& classes, int per_class) {
    int n = 0;
    for (const std::string& c : classes) {
      for (int i = 0; i < per_class; ++i, ++n) testing::write_png(path(root + "/" + c + "/" + std::to_string(i) + ".png"), pattern(30, n), 1, 6, 5);
    }
  }
  ImageFolderFormat grey() const {
    ImageFolderFormat f;
    f.channels = 1;
    f.height = 6;
    f.width = 5;
    return f;
  }
};

TEST_F(ImageFolders, ClassesAreSortedFolderNamesAndFilesKeepTheirOrder) {
  write_folder("d", {"dog", "cat", "bird"}, 3);
  fs::create_directories(path("d/.hidden"));
  testing::write_file(path("d/cat/notes.txt"), Bytes{'x'});
  const ImageFolderSet set = load_image_folder(path("d"), grey());
  EXPECT_EQ(set.dataset.class_names, (std::vector<std::string>{"bird", "cat", "dog"}));
  EXPECT_EQ(set.dataset.labels, (std::vector<std::int32_t>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(set.dataset.count, 9);
  // bird/0.png was the 7th written (dog, cat, bird).
  EXPECT_EQ(Bytes(set.dataset.images.begin(), set.dataset.images.begin() + 30), pattern(30, 6));
}

TEST_F(ImageFolders, ThreadCountDoesNotChangeTheResult) {
  write_folder("d", {"a", "b", "c"}, 20);
  ImageFolderFormat two = grey();
  two.threads = 2;
  const ImageFolderSet one_thread = load_image_folder(path("d"), grey()), two_threads = load_image_folder(path("d"), two);
  EXPECT_EQ(one_thread.dataset.images, two_threads.dataset.images);
  EXPECT_EQ(one_thread.dataset.labels, two_threads.dataset.labels);
}

TEST_F(ImageFolders, BadInputsAreNamed) {
  write_folder("d", {"a", "b"}, 2);
  fs::create_directories(path("d/empty"));
  EXPECT_EQ(error_of([&] { load_image_folder(path("d"), grey()); }),
            path("d/empty") + ": the class folder holds no PNG or JPEG images (.png, .jpg, .jpeg)");
  fs::remove(path("d/empty"));
  testing::write_png(path("d/b/rgb.png"), pattern(90, 1), 3, 6, 5);
  EXPECT_EQ(error_of([&] { load_image_folder(path("d"), grey()); }),
            path("d/b/rgb.png") + ": the image is RGB (3 channels) but the model takes grey (1 channel); pass --convert grey to convert");
  fs::remove(path("d/b/rgb.png"));
  testing::write_png(path("d/b/big.png"), pattern(56, 1), 1, 7, 8);
  EXPECT_EQ(error_of([&] { load_image_folder(path("d"), grey()); }),
            path("d/b/big.png") + ": the image is 7x8 (height x width) but the model takes 6x5; pass --resize 6,5 to resize");
  ImageFolderFormat resizing = grey();
  resizing.resize = true;
  EXPECT_EQ(load_image_folder(path("d"), resizing).dataset.count, 5);
  fs::create_directories(path("none"));
  EXPECT_TRUE(testing::starts_with(error_of([&] { load_image_folder(path("none"), grey()); }), path("none") + ": no class folders"));
}

TEST_F(ImageFolders, CorruptFilesFailOrAreSkippedAndListed) {
  write_folder("d", {"a", "b"}, 3);
  testing::write_file(path("d/a/1.png"), Bytes{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0});
  EXPECT_TRUE(testing::starts_with(error_of([&] { load_image_folder(path("d"), grey()); }), path("d/a/1.png") + ": corrupt PNG"));
  ImageFolderFormat skipping = grey();
  skipping.skip_bad_files = true;
  const ImageFolderSet set = load_image_folder(path("d"), skipping);
  EXPECT_EQ(set.skipped, std::vector<std::string>{path("d/a/1.png")});
  EXPECT_EQ(set.dataset.count, 5);
  EXPECT_EQ(set.dataset.labels, (std::vector<std::int32_t>{0, 0, 1, 1, 1}));
  EXPECT_EQ(Bytes(set.dataset.images.begin() + 30, set.dataset.images.begin() + 60), pattern(30, 2));
}

TEST_F(ImageFolders, CacheIsReusedRebuiltWhenFilesChangeAndSurvivesDamage) {
  write_folder("d", {"a", "b"}, 3);
  ImageFolderFormat cached = grey();
  cached.cache = true;
  const ImageFolderSet first = load_image_folder(path("d"), cached);
  EXPECT_FALSE(first.from_cache);
  const std::string cache = image_folder_cache_path(path("d"), list_image_folder(path("d")), cached);
  ASSERT_TRUE(fs::exists(cache));
  const ImageFolderSet second = load_image_folder(path("d"), cached);
  EXPECT_TRUE(second.from_cache);
  EXPECT_EQ(second.dataset.images, first.dataset.images);
  EXPECT_EQ(second.dataset.labels, first.dataset.labels);
  EXPECT_EQ(second.dataset.class_names, first.dataset.class_names);
  // Damaged caches: a flipped byte, a truncated file, an empty file.
  const Bytes good = testing::read_file(cache);
  for (int damage = 0; damage < 3; ++damage) {
    Bytes bad = good;
    if (damage == 0) bad[bad.size() / 2] ^= 1;
    if (damage == 1) bad.resize(bad.size() - 7);
    if (damage == 2) bad.clear();
    testing::write_file(cache, bad);
    const ImageFolderSet rebuilt = load_image_folder(path("d"), cached);
    EXPECT_FALSE(rebuilt.from_cache) << damage;
    EXPECT_EQ(rebuilt.dataset.images, first.dataset.images) << damage;
    EXPECT_EQ(testing::read_file(cache), good) << damage;
  }
  // A changed image has another key: decoded again.
  testing::write_png(path("d/b/0.png"), pattern(30, 99), 1, 6, 5);
  const ImageFolderSet changed = load_image_folder(path("d"), cached);
  EXPECT_FALSE(changed.from_cache);
  EXPECT_EQ(Bytes(changed.dataset.images.begin() + 90, changed.dataset.images.begin() + 120), pattern(30, 99));
  // Sets up to the limit are not cached unless asked; larger ones are.
  write_folder("small", {"a"}, 2);  // 60 decoded bytes
  ImageFolderFormat limited = grey();
  limited.cache_limit = 60;
  load_image_folder(path("small"), limited);
  for (const auto& entry : fs::directory_iterator(path("small"))) EXPECT_FALSE(contains(entry.path().string(), ".ember-cache"));
  limited.cache_limit = 59;
  EXPECT_FALSE(load_image_folder(path("small"), limited).from_cache);
  EXPECT_TRUE(load_image_folder(path("small"), limited).from_cache);
}

TEST_F(ImageFolders, ProgressIsReportedUpToTheTotal) {
  write_folder("d", {"a", "b"}, 3);
  std::vector<std::int64_t> done;
  ImageFolderFormat two = grey();
  two.threads = 2;
  load_image_folder(path("d"), two, [&](const std::string& directory, std::int64_t n, std::int64_t total) {
    EXPECT_EQ(directory, path("d"));
    EXPECT_EQ(total, 6);
    done.push_back(n);
  });
  EXPECT_EQ(done, std::vector<std::int64_t>{6});
}

}  // namespace
}  // namespace ember
