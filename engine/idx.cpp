#include "engine/idx.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "engine/error.h"
#include "engine/memory_limit.h"
#include "engine/text.h"

namespace ember {
namespace {

std::string hex(std::uint32_t value, int digits) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%0*x", digits, value);
  return text;
}

std::uint32_t big_endian(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

bool gzip_magic(const std::uint8_t* p, std::size_t size) { return size >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

std::string dims_text(const std::vector<std::uint32_t>& dims) {
  return "[" + join(dims) + "]";
}

// The 4 bytes at `p`, little-endian (the gzip trailer's order).
std::uint32_t little_endian(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[3]} << 24);
}

// Inflates every member of a gzip file: RFC 1952 (section 2.2) lets a file hold several
// members one after another (`cat a.gz b.gz`, bgzip), and gunzip yields their
// concatenation. Anything after a member that is not another member is refused.
// zlib writes straight into the result. Its first size is the last member's ISIZE (its
// inflated size mod 2^32, the file's last 4 bytes): the whole output of a one-member file
// such as Fashion-MNIST's, so it is allocated once and never copied. That is only a hint
// (a file may lie, or hold several members): the result grows as needed, never past
// max_bytes + 1, the size that says the limit was passed.
std::vector<std::uint8_t> gunzip(const std::string& path, const std::vector<std::uint8_t>& raw, std::size_t max_bytes) {
  // windowBits 15 + 16: gzip only (a zlib stream after a member must not be taken for one).
  z_stream stream{};
  if (inflateInit2(&stream, 15 + 16) != Z_OK) throw Error(path + ": zlib could not start");
  std::unique_ptr<z_stream, int (*)(z_stream*)> end_stream(&stream, &inflateEnd);
  const std::size_t ceiling = max_bytes == std::numeric_limits<std::size_t>::max() ? max_bytes : max_bytes + 1;
  constexpr std::size_t smallest = std::size_t{1} << 16;
  // Deflate expands at most 1032:1, so a larger ISIZE is a lie; it must not size the buffer.
  const std::size_t hint = raw.size() >= 4 ? std::min<std::size_t>(little_endian(raw.data() + raw.size() - 4), 1032 * raw.size()) : 0;
  std::vector<std::uint8_t> out(std::min(ceiling, std::max(smallest, hint)));
  std::size_t produced = 0;  // bytes of `out` zlib has written
  std::size_t consumed = 0;  // bytes of `raw` handed to zlib so far
  int members = 1;
  for (;;) {
    if (stream.avail_in == 0 && consumed < raw.size()) {
      // avail_in is 32 bits: feed files beyond 4 GiB in pieces.
      const std::size_t piece = std::min<std::size_t>(raw.size() - consumed, std::numeric_limits<uInt>::max());
      stream.next_in = const_cast<Bytef*>(raw.data() + consumed);
      stream.avail_in = static_cast<uInt>(piece);
      consumed += piece;
    }
    if (produced == out.size()) out.resize(std::min(ceiling, 2 * out.size()));
    const std::size_t room = std::min<std::size_t>(out.size() - produced, std::numeric_limits<uInt>::max());
    stream.next_out = out.data() + produced;
    stream.avail_out = static_cast<uInt>(room);
    const int status = inflate(&stream, Z_NO_FLUSH);
    produced += room - stream.avail_out;
    if (produced > max_bytes) {
      throw Error(path + ": the gzip data inflates to more than " + format_bytes(max_bytes) + " (the memory limit)");
    }
    if (status == Z_STREAM_END) {
      const std::size_t rest = stream.avail_in + (raw.size() - consumed);
      if (rest == 0) {
        out.resize(produced);
        return out;
      }
      const std::size_t at = raw.size() - rest;
      if (!gzip_magic(raw.data() + at, rest)) {
        throw Error(path + ": " + std::to_string(rest) + (rest == 1 ? " byte" : " bytes") + " after gzip member " +
                    std::to_string(members) + " (at byte " + std::to_string(at) + ") that are not another gzip member");
      }
      if (inflateReset(&stream) != Z_OK) throw Error(path + ": zlib could not start gzip member " + std::to_string(members + 1));
      ++members;
      continue;
    }
    if (status != Z_OK && status != Z_BUF_ERROR) {
      const std::string reason = stream.msg != nullptr ? stream.msg : "zlib error " + std::to_string(status);
      throw Error(path + ": corrupt or truncated gzip data (" + reason + ")");
    }
    // No more input and the member has not ended.
    if (stream.avail_in == 0 && consumed == raw.size() && stream.avail_out != 0) {
      throw Error(path + ": truncated gzip data (gzip member " + std::to_string(members) + " ends before its end marker)");
    }
  }
}

}  // namespace

std::vector<std::uint8_t> read_maybe_gzipped(const std::string& path, std::size_t max_bytes) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw Error(path + ": cannot open: " + std::strerror(errno));
  // The file itself is held in memory too: one larger than the limit is refused before
  // it is read (a regular file) or once it has passed it (a pipe).
  const std::size_t limit = resolve_memory_limit(max_bytes);
  auto check_size = [&](std::size_t bytes) {
    if (bytes > limit) {
      throw Error(path + ": the file holds more than " + format_bytes(limit) + " (the memory limit), found " +
                  std::to_string(bytes) + " bytes");
    }
  };
  // Read in one go when the size is known (a regular file); pipes and the like in pieces.
  std::vector<std::uint8_t> raw;
  struct stat info {};
  if (::fstat(::fileno(file.get()), &info) == 0 && S_ISREG(info.st_mode) && info.st_size > 0) {
    check_size(static_cast<std::size_t>(info.st_size));
    raw.resize(static_cast<std::size_t>(info.st_size));
    raw.resize(std::fread(raw.data(), 1, raw.size(), file.get()));
  }
  std::uint8_t buffer[1 << 16];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get())) {
    raw.insert(raw.end(), buffer, buffer + n);
    check_size(raw.size());
  }
  if (std::ferror(file.get())) throw Error(path + ": read error: " + std::strerror(errno));
  if (!gzip_magic(raw.data(), raw.size())) return raw;
  return gunzip(path, raw, limit);
}

IdxArray read_idx(const std::string& path, int expected_rank, std::size_t max_bytes) {
  std::vector<std::uint8_t> bytes = read_maybe_gzipped(path, max_bytes);
  if (bytes.size() < 4) {
    throw Error(path + ": truncated: an IDX header needs at least 4 bytes, found " + std::to_string(bytes.size()));
  }
  const std::uint32_t expected_magic = 0x00000800u | static_cast<std::uint32_t>(expected_rank);
  const std::uint32_t magic = big_endian(bytes.data());
  if (bytes[0] != 0 || bytes[1] != 0) {
    throw Error(path + ": magic: expected " + hex(expected_magic, 8) + " (IDX, unsigned bytes, rank " +
                std::to_string(expected_rank) + "), found " + hex(magic, 8) + ": not an IDX file");
  }
  if (bytes[2] != 0x08) {
    throw Error(path + ": data type: expected 0x08 (unsigned byte), found " + hex(bytes[2], 2));
  }
  if (bytes[3] != expected_rank) {
    throw Error(path + ": rank: expected " + std::to_string(expected_rank) + ", found " + std::to_string(bytes[3]));
  }
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(expected_rank);
  if (bytes.size() < header) {
    throw Error(path + ": truncated: the header needs " + std::to_string(header) + " bytes, found " + std::to_string(bytes.size()));
  }
  std::vector<std::uint32_t> sizes;
  for (int d = 0; d < expected_rank; ++d) sizes.push_back(big_endian(bytes.data() + 4 + 4 * d));
  for (std::size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) throw Error(path + ": dimension " + std::to_string(d) + " is 0");
  }
  // Checked: a wrapped product ([2^31, 2^31, 4] gives 0) would match a short, even empty, payload.
  std::uint64_t elements = 1;
  for (const std::uint32_t size : sizes) {
    if (__builtin_mul_overflow(elements, std::uint64_t{size}, &elements)) {
      throw Error(path + ": dimensions " + dims_text(sizes) + ": the element count overflows 64 bits");
    }
  }
  const std::uint64_t payload = bytes.size() - header;
  if (payload < elements) {
    throw Error(path + ": truncated: the header promises " + std::to_string(elements) + " bytes of data, found " +
                std::to_string(payload));
  }
  if (payload > elements) {
    const std::uint64_t extra = payload - elements;
    throw Error(path + ": " + std::to_string(extra) + (extra == 1 ? " unexpected byte" : " unexpected bytes") + " after the " +
                std::to_string(elements) + " the header promises");
  }
  IdxArray array;
  array.dims.assign(sizes.begin(), sizes.end());
  // The header moved out in place: no second buffer of the data's size.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  array.data = std::move(bytes);
  return array;
}

}  // namespace ember
