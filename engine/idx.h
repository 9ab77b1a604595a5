#pragma once
// The IDX format of the MNIST family (LeCun et al.): a big-endian header (two zero
// bytes, a type byte, a rank byte, one 32-bit size per dimension) and the raw data.
// Files may be gzip-compressed; that is detected from the gzip magic bytes, not the name.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ember {

struct IdxArray {
  std::vector<std::int64_t> dims;
  std::vector<std::uint8_t> data;  // unsigned bytes, row-major
};

// Reads an IDX file of unsigned bytes (type 0x08) with the expected rank (3 for images,
// 1 for labels). Every header field is checked; errors name the file, the field, the
// expected and the found value.
// `max_bytes` bounds the data once inflated (0: the available memory, engine/memory_limit.h).
IdxArray read_idx(const std::string& path, int expected_rank, std::size_t max_bytes = 0);

// The file's bytes, gunzipped if it starts with the gzip magic: all members of a
// multi-member gzip file (`cat a.gz b.gz`), as gunzip yields them. Errors name the file.
// Inflating past `max_bytes` (0: the available memory) is an error, so a small file that
// inflates without end (a gzip bomb) is refused instead of exhausting memory.
std::vector<std::uint8_t> read_maybe_gzipped(const std::string& path, std::size_t max_bytes = 0);

}  // namespace ember
