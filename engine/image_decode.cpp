#include "engine/image_decode.h"

// libjpeg's headers need size_t and FILE declared first.
#include <cstdio>
#include <cstring>
#include <csetjmp>
#include <fstream>
#include <iterator>
#include <cmath>

#include <jpeglib.h>
#include <png.h>

#include "engine/error.h"

namespace ember {
namespace {

// Larger images are refused before their pixels are allocated (a 20-byte header may claim
// 2^31 x 2^31): 2^28 bytes is a 9459 x 9459 RGB image.
constexpr std::int64_t max_decoded_bytes = std::int64_t{1} << 28;

void check_decoded_size(std::int64_t channels, std::int64_t height, std::int64_t width, const std::string& name) {
  if (height < 1 || width < 1 || channels * height * width > max_decoded_bytes) {
    throw Error(name + ": the image is " + std::to_string(width) + "x" + std::to_string(height) + " with " +
                std::to_string(channels) + " channel(s); expected at least 1x1 and at most " +
                std::to_string(max_decoded_bytes) + " decoded bytes");
  }
}

// Interleaved rows (HWC, `stride` components per pixel) to planes (CHW): the first
// `channels` components, so an alpha component after them is dropped.
DecodedImage planar(const std::vector<std::uint8_t>& interleaved, std::int64_t channels, std::int64_t height, std::int64_t width,
                    std::int64_t stride) {
  const std::int64_t plane = height * width;
  DecodedImage image{channels, height, width, std::vector<std::uint8_t>(static_cast<std::size_t>(channels * plane))};
  for (std::int64_t p = 0; p < plane; ++p) {
    for (std::int64_t c = 0; c < channels; ++c) {
      image.pixels[static_cast<std::size_t>(c * plane + p)] = interleaved[static_cast<std::size_t>(p * stride + c)];
    }
  }
  return image;
}

DecodedImage decode_png(std::span<const std::uint8_t> bytes, const std::string& name) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (png_image_begin_read_from_memory(&png, bytes.data(), bytes.size()) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    throw Error(name + ": corrupt PNG: " + message);
  }
  const std::int64_t channels = (png.format & PNG_FORMAT_FLAG_COLOR) != 0 ? 3 : 1;
  // Alpha is read and then dropped (PIL's convert("RGB")): asking libpng for a format
  // without it would compose the image onto black instead.
  const bool alpha = (png.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  png.format = channels == 3 ? (alpha ? PNG_FORMAT_RGBA : PNG_FORMAT_RGB) : (alpha ? PNG_FORMAT_GA : PNG_FORMAT_GRAY);
  try {
    check_decoded_size(channels, png.height, png.width, name);
  } catch (...) {
    png_image_free(&png);
    throw;
  }
  std::vector<std::uint8_t> interleaved(PNG_IMAGE_SIZE(png));
  if (png_image_finish_read(&png, nullptr, interleaved.data(), 0, nullptr) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    throw Error(name + ": corrupt or truncated PNG: " + message);
  }
  return planar(interleaved, channels, png.height, png.width, channels + (alpha ? 1 : 0));
}

struct JpegErrors {
  jpeg_error_mgr manager;  // first: libjpeg sees only this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrors*>(info->err);
  (*info->err->format_message)(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// libjpeg reports corrupt or missing data as warnings and decodes grey in their place:
// here they fail, so a damaged file is never trained on.
void jpeg_message(j_common_ptr info, int level) {
  if (level < 0) jpeg_fail(info);
}

struct JpegShape {
  int channels = 0, height = 0, width = 0;
};

// No C++ object with a destructor lives in this frame: longjmp may leave it.
bool read_jpeg(std::span<const std::uint8_t> bytes, std::vector<std::uint8_t>& out, JpegShape& shape, JpegErrors& errors) {
  jpeg_decompress_struct info;
  info.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_fail;
  errors.manager.emit_message = jpeg_message;
  jpeg_create_decompress(&info);
  if (setjmp(errors.jump) != 0) {
    jpeg_destroy_decompress(&info);
    return false;
  }
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  if (info.num_components != 1 && info.num_components != 3) {
    std::snprintf(errors.message, sizeof errors.message, "%d colour components (CMYK?); expected 1 (grey) or 3 (colour)",
                  info.num_components);
    jpeg_destroy_decompress(&info);
    return false;
  }
  info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_calc_output_dimensions(&info);
  shape = {info.num_components, static_cast<int>(info.output_height), static_cast<int>(info.output_width)};
  if (static_cast<std::int64_t>(shape.channels) * shape.height * shape.width > max_decoded_bytes || shape.height < 1) {
    std::snprintf(errors.message, sizeof errors.message, "the image is %dx%d; at most %lld decoded bytes are read", shape.width,
                  shape.height, static_cast<long long>(max_decoded_bytes));
    jpeg_destroy_decompress(&info);
    return false;
  }
  out.resize(static_cast<std::size_t>(shape.channels) * shape.height * shape.width);
  jpeg_start_decompress(&info);
  const std::size_t stride = static_cast<std::size_t>(shape.channels) * shape.width;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out.data() + info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return true;
}

DecodedImage decode_jpeg(std::span<const std::uint8_t> bytes, const std::string& name) {
  std::vector<std::uint8_t> interleaved;
  JpegShape shape;
  JpegErrors errors{};
  if (!read_jpeg(bytes, interleaved, shape, errors)) throw Error(name + ": corrupt or truncated JPEG: " + errors.message);
  return planar(interleaved, shape.channels, shape.height, shape.width, shape.channels);
}

}  // namespace

DecodedImage decode_image(std::span<const std::uint8_t> bytes, const std::string& name) {
  static constexpr std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_signature, 8) == 0) return decode_png(bytes, name);
  if (bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) return decode_jpeg(bytes, name);
  throw Error(name + ": not a PNG or JPEG file (its first bytes are neither signature)");
}

DecodedImage decode_image_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw Error(path + ": cannot open the image");
  const std::streamoff size = file.tellg();
  if (size < 0 || size > max_decoded_bytes) throw Error(path + ": cannot read the image (or it is larger than 256 MiB)");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  file.seekg(0);
  if (!file.read(reinterpret_cast<char*>(bytes.data()), size)) throw Error(path + ": cannot read the image");
  return decode_image(bytes, path);
}

DecodedImage convert_channels(const DecodedImage& image, std::int64_t channels) {
  if (image.channels == channels) return image;
  const std::int64_t plane = image.height * image.width;
  DecodedImage out{channels, image.height, image.width, std::vector<std::uint8_t>(static_cast<std::size_t>(channels * plane))};
  if (image.channels == 1 && channels == 3) {
    for (int c = 0; c < 3; ++c) std::copy(image.pixels.begin(), image.pixels.end(), out.pixels.begin() + c * plane);
  } else if (image.channels == 3 && channels == 1) {
    const std::uint8_t* p = image.pixels.data();
    for (std::int64_t i = 0; i < plane; ++i) {
      out.pixels[static_cast<std::size_t>(i)] =
          static_cast<std::uint8_t>((299 * p[i] + 587 * p[plane + i] + 114 * p[2 * plane + i] + 500) / 1000);
    }
  } else {
    throw Error("cannot convert an image of " + std::to_string(image.channels) + " channels to " + std::to_string(channels));
  }
  return out;
}

std::vector<std::uint8_t> resize_bilinear(std::span<const std::uint8_t> planes, std::int64_t channels, std::int64_t height,
                                          std::int64_t width, std::int64_t out_height, std::int64_t out_width) {
  // Source coordinate and weight of each output row or column.
  auto axis = [](std::int64_t in, std::int64_t out, std::vector<std::int64_t>& first, std::vector<double>& weight) {
    const double scale = static_cast<double>(in) / static_cast<double>(out);
    for (std::int64_t o = 0; o < out; ++o) {
      const double source = std::max(0.0, (static_cast<double>(o) + 0.5) * scale - 0.5);
      const auto low = std::min(static_cast<std::int64_t>(source), in - 1);
      first.push_back(low);
      weight.push_back(source - static_cast<double>(low));
    }
  };
  std::vector<std::int64_t> row, column;
  std::vector<double> row_weight, column_weight;
  axis(height, out_height, row, row_weight);
  axis(width, out_width, column, column_weight);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(channels * out_height * out_width));
  for (std::int64_t c = 0; c < channels; ++c) {
    const std::uint8_t* in = planes.data() + c * height * width;
    for (std::int64_t y = 0; y < out_height; ++y) {
      const std::int64_t y0 = row[y], y1 = std::min(y0 + 1, height - 1);
      for (std::int64_t x = 0; x < out_width; ++x) {
        const std::int64_t x0 = column[x], x1 = std::min(x0 + 1, width - 1);
        const double wx = column_weight[x], wy = row_weight[y];
        const double top = in[y0 * width + x0] * (1.0 - wx) + in[y0 * width + x1] * wx;
        const double bottom = in[y1 * width + x0] * (1.0 - wx) + in[y1 * width + x1] * wx;
        out[static_cast<std::size_t>((c * out_height + y) * out_width + x)] =
            static_cast<std::uint8_t>(std::floor(top * (1.0 - wy) + bottom * wy + 0.5));
      }
    }
  }
  return out;
}

}  // namespace ember
