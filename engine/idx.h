#pragma once
// The IDX format of the MNIST family (LeCun et al.): a big-endian header (two zero
// bytes, a type byte, a rank byte, one 32-bit size per dimension) and the raw data.
// Files may be gzip-compressed; that is detected from the gzip magic bytes, not the name.
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
IdxArray read_idx(const std::string& path, int expected_rank);

// The file's bytes, gunzipped if it starts with the gzip magic: all members of a
// multi-member gzip file (`cat a.gz b.gz`), as gunzip yields them. Errors name the file.
std::vector<std::uint8_t> read_maybe_gzipped(const std::string& path);

}  // namespace ember
