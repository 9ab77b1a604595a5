#include "engine/augment.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "engine/error.h"
#include "engine/random.h"

namespace ember {
namespace {

[[noreturn]] void bad_item(const std::string& item, const std::string& why) {
  throw Error("augment: item \"" + item + "\": " + why + " (known: crop:P with P a padding in pixels, flip or flip:Q with Q a probability)");
}

double number_after_colon(const std::string& item, const std::string& argument) {
  char* end = nullptr;
  const double value = std::strtod(argument.c_str(), &end);
  if (argument.empty() || end != argument.c_str() + argument.size()) bad_item(item, "expected a number after ':', found \"" + argument + "\"");
  return value;
}

// Zero-pads each plane by `padding`, then takes the original size at (top, left).
void crop(std::uint8_t* pixels, std::int64_t channels, std::int64_t height, std::int64_t width, std::int64_t padding,
          std::int64_t top, std::int64_t left) {
  std::vector<std::uint8_t> plane(static_cast<std::size_t>(height * width));
  for (std::int64_t c = 0; c < channels; ++c) {
    std::uint8_t* p = pixels + c * height * width;
    std::fill(plane.begin(), plane.end(), std::uint8_t{0});
    for (std::int64_t y = 0; y < height; ++y) {
      const std::int64_t source_y = y + top - padding;
      if (source_y < 0 || source_y >= height) continue;
      for (std::int64_t x = 0; x < width; ++x) {
        const std::int64_t source_x = x + left - padding;
        if (source_x >= 0 && source_x < width) plane[static_cast<std::size_t>(y * width + x)] = p[source_y * width + source_x];
      }
    }
    std::copy(plane.begin(), plane.end(), p);
  }
}

void flip_horizontally(std::uint8_t* pixels, std::int64_t rows, std::int64_t width) {
  for (std::int64_t r = 0; r < rows; ++r) std::reverse(pixels + r * width, pixels + (r + 1) * width);
}

}  // namespace

AugmentSpec parse_augment_spec(const std::string& text) {
  AugmentSpec spec;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    start = comma + 1;
    const std::size_t colon = item.find(':');
    const std::string name = item.substr(0, colon);
    const std::string argument = colon == std::string::npos ? std::string() : item.substr(colon + 1);
    if (name == "crop") {
      const double padding = number_after_colon(item, argument);
      if (padding < 1 || padding > 1024 || padding != static_cast<double>(static_cast<std::int64_t>(padding))) {
        bad_item(item, "the padding must be a whole number of pixels in [1, 1024]");
      }
      spec.crop_padding = static_cast<std::int64_t>(padding);
    } else if (name == "flip") {
      spec.flip_probability = colon == std::string::npos ? 0.5 : number_after_colon(item, argument);
      if (!(spec.flip_probability > 0.0 && spec.flip_probability <= 1.0)) bad_item(item, "the probability must be in (0, 1]");
    } else {
      bad_item(item, "unknown augmentation");
    }
  }
  return spec;
}

void Augmenter::apply(std::uint8_t* pixels, std::int64_t channels, std::int64_t height, std::int64_t width, int epoch,
                      std::int64_t sample) const {
  const CounterRandom random = CounterRandom(seed_ ^ 0xa0a0a0a0ULL).derive(static_cast<std::uint64_t>(epoch));
  const std::uint64_t counter = static_cast<std::uint64_t>(sample) * 4;
  if (spec_.crop_padding > 0) {
    const auto span = static_cast<std::uint64_t>(2 * spec_.crop_padding + 1);
    const auto top = static_cast<std::int64_t>(random.bits(counter) % span);
    const auto left = static_cast<std::int64_t>(random.bits(counter + 1) % span);
    crop(pixels, channels, height, width, spec_.crop_padding, top, left);
  }
  if (spec_.flip_probability > 0.0 && random.uniform(counter + 2) < spec_.flip_probability) {
    flip_horizontally(pixels, channels * height, width);
  }
}

}  // namespace ember
