// The image decoders (engine/image_decode.h: libpng, libjpeg-turbo) on arbitrary bytes,
// then the conversions a dataset applies to what they return.
#include <cstdint>
#include <span>

#include "engine/image_decode.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::DecodedImage image = ember::decode_image(std::span<const std::uint8_t>(data, size), "input");
    if (image.channels * image.height * image.width != static_cast<std::int64_t>(image.pixels.size())) {
      ember::fuzz::finding("decode_image returned pixels that disagree with its shape");
    }
    ember::fuzz::touch(image.pixels.data(), image.pixels.size());
    if (image.height * image.width <= 4096) {
      const ember::DecodedImage other = ember::convert_channels(image, image.channels == 1 ? 3 : 1);
      const auto resized = ember::resize_bilinear(other.pixels, other.channels, other.height, other.width, 5, 3);
      ember::fuzz::touch(resized.data(), resized.size());
    }
  });
  return 0;
}
