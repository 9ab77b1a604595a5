#include "engine/idx.h"

#include <zlib.h>

#include <cstdio>
#include <memory>

#include "engine/error.h"

namespace ember {
namespace {

std::string hex(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

std::uint32_t big_endian(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

}  // namespace

std::vector<std::uint8_t> read_maybe_gzipped(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Error(path + ": cannot open");
  std::vector<std::uint8_t> raw;
  std::uint8_t buffer[1 << 16];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get())) raw.insert(raw.end(), buffer, buffer + n);
  if (std::ferror(file.get())) throw Error(path + ": read error");
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;

  // gzip: inflate with zlib (windowBits 15 + 32 detects the gzip header).
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 32) != Z_OK) throw Error(path + ": zlib could not start");
  std::vector<std::uint8_t> out;
  stream.next_in = raw.data();
  stream.avail_in = static_cast<uInt>(raw.size());
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    stream.next_out = buffer;
    stream.avail_out = sizeof buffer;
    status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      const std::string reason = stream.msg != nullptr ? stream.msg : "unexpected end of data";
      inflateEnd(&stream);
      throw Error(path + ": corrupt or truncated gzip data (" + reason + ")");
    }
    out.insert(out.end(), buffer, buffer + (sizeof buffer - stream.avail_out));
    if (status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      throw Error(path + ": truncated gzip data (the stream ends before its end marker)");
    }
  }
  inflateEnd(&stream);
  return out;
}

IdxArray read_idx(const std::string& path, int expected_rank) {
  const std::vector<std::uint8_t> bytes = read_maybe_gzipped(path);
  if (bytes.size() < 4) {
    throw Error(path + ": truncated: an IDX header needs at least 4 bytes, found " + std::to_string(bytes.size()));
  }
  const std::uint32_t expected_magic = 0x00000800u | static_cast<std::uint32_t>(expected_rank);
  const std::uint32_t magic = big_endian(bytes.data());
  if (bytes[0] != 0 || bytes[1] != 0) {
    throw Error(path + ": magic: expected " + hex(expected_magic) + " (IDX, unsigned bytes, rank " +
                std::to_string(expected_rank) + "), found " + hex(magic) + ": not an IDX file");
  }
  if (bytes[2] != 0x08) {
    throw Error(path + ": data type: expected 0x08 (unsigned byte), found " + hex(bytes[2]));
  }
  if (bytes[3] != expected_rank) {
    throw Error(path + ": rank: expected " + std::to_string(expected_rank) + ", found " + std::to_string(bytes[3]));
  }
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(expected_rank);
  if (bytes.size() < header) {
    throw Error(path + ": truncated: the header needs " + std::to_string(header) + " bytes, found " + std::to_string(bytes.size()));
  }
  IdxArray array;
  std::uint64_t elements = 1;
  for (int d = 0; d < expected_rank; ++d) {
    const std::uint32_t size = big_endian(bytes.data() + 4 + 4 * d);
    if (size == 0) throw Error(path + ": dimension " + std::to_string(d) + " is 0");
    array.dims.push_back(size);
    elements *= size;
  }
  const std::uint64_t payload = bytes.size() - header;
  if (payload < elements) {
    throw Error(path + ": truncated: the header promises " + std::to_string(elements) + " bytes of data, found " +
                std::to_string(payload));
  }
  if (payload > elements) {
    throw Error(path + ": " + std::to_string(payload - elements) + " unexpected bytes after the " +
                std::to_string(elements) + " the header promises");
  }
  array.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return array;
}

}  // namespace ember
