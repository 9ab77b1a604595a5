#pragma once
// PNG and JPEG files decoded to planar uint8 (channels x height x width), through libpng
// and libjpeg-turbo; and the two conversions a dataset may ask for: grey <-> RGB and a
// bilinear resize. Every failure is an ember::Error naming the file.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ember {

struct DecodedImage {
  std::int64_t channels = 0;  // 1 (grey) or 3 (RGB)
  std::int64_t height = 0, width = 0;
  std::vector<std::uint8_t> pixels;  // channels x height x width
};

// Decodes PNG or JPEG bytes (told apart by their signature). Grey (with or without
// alpha) gives one channel; colour, palette and RGBA give three (alpha is dropped, as
// torchvision's convert("RGB") does). `name` is for messages. Corrupt or truncated data is
// an error, never a partial image.
DecodedImage decode_image(std::span<const std::uint8_t> bytes, const std::string& name);

// Reads and decodes one file: what `ember predict` needs for an image.
DecodedImage decode_image_file(const std::string& path);

// The image with `channels` channels: grey -> RGB repeats the plane; RGB -> grey is
// ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, rounded), as PIL's convert("L").
DecodedImage convert_channels(const DecodedImage& image, std::int64_t channels);

// Bilinear resize of each plane with half-pixel centres (align_corners=False, no
// antialiasing: PyTorch's interpolate(mode="bilinear")), rounded to the nearest integer.
std::vector<std::uint8_t> resize_bilinear(std::span<const std::uint8_t> planes, std::int64_t channels, std::int64_t height,
                                          std::int64_t width, std::int64_t out_height, std::int64_t out_width);

}  // namespace ember
