#pragma once
// Writing PNG and JPEG files for the image-folder tests (libpng, libjpeg-turbo), from
// planar uint8 pixels (channels x height x width) as engine/image_decode.h returns them.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>

namespace ember::testing {

inline std::vector<std::uint8_t> interleaved(const std::vector<std::uint8_t>& planes, int channels, int height, int width) {
  std::vector<std::uint8_t> out(planes.size());
  const int plane = height * width;
  for (int p = 0; p < plane; ++p) {
    for (int c = 0; c < channels; ++c) out[static_cast<std::size_t>(p * channels + c)] = planes[static_cast<std::size_t>(c * plane + p)];
  }
  return out;
}

inline void write_png(const std::string& path, const std::vector<std::uint8_t>& planes, int channels, int height, int width) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  const std::vector<std::uint8_t> pixels = interleaved(planes, channels, height, width);
  ASSERT_NE(png_image_write_to_file(&image, path.c_str(), 0, pixels.data(), 0, nullptr), 0) << path << ": " << image.message;
}

inline void write_jpeg(const std::string& path, const std::vector<std::uint8_t>& planes, int channels, int height, int width,
                       int quality = 95) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  jpeg_stdio_dest(&info, file);
  info.image_width = static_cast<JDIMENSION>(width);
  info.image_height = static_cast<JDIMENSION>(height);
  info.input_components = channels;
  info.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  std::vector<std::uint8_t> pixels = interleaved(planes, channels, height, width);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = pixels.data() + static_cast<std::size_t>(info.next_scanline) * channels * width;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

}  // namespace ember::testing
