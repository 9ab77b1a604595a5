// Bad-input handling of engine/idx (IDX files, raw or gzip) and engine/dataset (image and
// label files read together). Every error must name the file and the field, and the
// expected and found values where the reader knows them.
#include "engine/idx.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/error.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::contains;
using testing::error_of;
using testing::header_length_of;
using testing::read_file;
using testing::starts_with;
using testing::write_file;

void put_big_endian(Bytes& out, std::uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(value >> shift));
}

// An IDX file: 0, 0, type, rank, one big-endian size per dimension, then `data`.
Bytes idx_bytes(const std::vector<std::uint32_t>& dims, const Bytes& data, std::uint8_t type = 0x08) {
  Bytes out{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) put_big_endian(out, d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes ramp(std::size_t n, std::uint8_t first = 0) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(first + i * 7);
  return out;
}

// gzip through zlib's own writer, as `gzip` would produce it.
void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb9");
  ASSERT_NE(file, nullptr) << path;
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

// Each test gets its own directory under the system's temporary directory.
class IdxFiles : public testing::TempDirectoryTest {};

TEST_F(IdxFiles, RawImagesAndLabelsRoundTrip) {
  const Bytes pixels = ramp(3 * 2 * 4);
  write_file(path("images"), idx_bytes({3, 2, 4}, pixels));
  const IdxArray images = read_idx(path("images"), 3);
  EXPECT_EQ(images.dims, (std::vector<std::int64_t>{3, 2, 4}));
  EXPECT_EQ(images.data, pixels);

  write_file(path("labels"), idx_bytes({3}, {7, 0, 9}));
  const IdxArray labels = read_idx(path("labels"), 1);
  EXPECT_EQ(labels.dims, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(labels.data, (Bytes{7, 0, 9}));
}

TEST_F(IdxFiles, GzipFilesRoundTrip) {
  // 100 x 28 x 28 = 78400 bytes: more than the reader's 64 KiB inflate buffer.
  const Bytes pixels = ramp(100 * 28 * 28, 3);
  write_gzip(path("images.gz"), idx_bytes({100, 28, 28}, pixels));
  const Bytes on_disk = read_file(path("images.gz"));
  ASSERT_GE(on_disk.size(), 2u);
  ASSERT_EQ(on_disk[0], 0x1f);  // really gzip, so the inflate path is the one tested
  ASSERT_EQ(on_disk[1], 0x8b);
  const IdxArray images = read_idx(path("images.gz"), 3);
  EXPECT_EQ(images.dims, (std::vector<std::int64_t>{100, 28, 28}));
  EXPECT_EQ(images.data, pixels);

  // Detection is by content, not by name: a gzip file without ".gz" is inflated too.
  write_gzip(path("labels"), idx_bytes({4}, {1, 2, 3, 4}));
  EXPECT_EQ(read_idx(path("labels"), 1).data, (Bytes{1, 2, 3, 4}));
  EXPECT_EQ(read_maybe_gzipped(path("labels")), idx_bytes({4}, {1, 2, 3, 4}));
}

// A one-member file's trailer gives its inflated size: the reader allocates that once and
// inflates into it (no growth, no copy), whatever the size relative to its first guess.
TEST_F(IdxFiles, OneMemberGzipIsInflatedIntoOneAllocation) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1000}, std::size_t{65536}, std::size_t{300 * 28 * 28 + 16}}) {
    SCOPED_TRACE(size);
    const Bytes bytes = ramp(size, 1);
    write_gzip(path("one.gz"), bytes);
    const Bytes read = read_maybe_gzipped(path("one.gz"));
    EXPECT_EQ(read, bytes);
    EXPECT_EQ(read.capacity(), std::max<std::size_t>(size, 65536));
  }
}

TEST_F(IdxFiles, WrongMagicIsNamed) {
  Bytes bytes = idx_bytes({1, 2, 2}, ramp(4));
  bytes[0] = 0x01;
  write_file(path("images"), bytes);
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 3); }),
            path("images") + ": magic: expected 0x00000803 (IDX, unsigned bytes, rank 3), found 0x01000803: not an IDX file");

  write_file(path("text"), Bytes{'h', 'e', 'l', 'l', 'o', '\n'});
  EXPECT_EQ(error_of([&] { read_idx(path("text"), 1); }),
            path("text") + ": magic: expected 0x00000801 (IDX, unsigned bytes, rank 1), found 0x68656c6c: not an IDX file");
}

TEST_F(IdxFiles, WrongDataTypeIsNamed) {
  write_file(path("floats"), idx_bytes({2}, ramp(8), 0x0d));  // 0x0d: IDX float
  EXPECT_EQ(error_of([&] { read_idx(path("floats"), 1); }),
            path("floats") + ": data type: expected 0x08 (unsigned byte), found 0x0d");
}

TEST_F(IdxFiles, WrongRankIsNamed) {
  write_file(path("labels"), idx_bytes({4}, ramp(4)));
  EXPECT_EQ(error_of([&] { read_idx(path("labels"), 3); }), path("labels") + ": rank: expected 3, found 1");
  write_file(path("images"), idx_bytes({1, 2, 2}, ramp(4)));
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 1); }), path("images") + ": rank: expected 1, found 3");
}

TEST_F(IdxFiles, TruncatedHeaderIsNamed) {
  write_file(path("empty"), Bytes{});
  EXPECT_EQ(error_of([&] { read_idx(path("empty"), 3); }),
            path("empty") + ": truncated: an IDX header needs at least 4 bytes, found 0");
  write_file(path("two"), Bytes{0, 0});
  EXPECT_EQ(error_of([&] { read_idx(path("two"), 3); }),
            path("two") + ": truncated: an IDX header needs at least 4 bytes, found 2");
  // Rank 3 needs 4 + 3 * 4 = 16 header bytes; cut inside the second dimension.
  const Bytes full = idx_bytes({1, 2, 2}, ramp(4));
  write_file(path("cut"), Bytes(full.begin(), full.begin() + 10));
  EXPECT_EQ(error_of([&] { read_idx(path("cut"), 3); }), path("cut") + ": truncated: the header needs 16 bytes, found 10");
}

TEST_F(IdxFiles, TruncatedPayloadIsNamed) {
  Bytes bytes = idx_bytes({3, 2, 4}, ramp(24));
  bytes.pop_back();
  write_file(path("images"), bytes);
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 3); }),
            path("images") + ": truncated: the header promises 24 bytes of data, found 23");
  write_file(path("header-only"), idx_bytes({5}, {}));
  EXPECT_EQ(error_of([&] { read_idx(path("header-only"), 1); }),
            path("header-only") + ": truncated: the header promises 5 bytes of data, found 0");
}

TEST_F(IdxFiles, TrailingBytesAreRejected) {
  write_file(path("images"), idx_bytes({3, 2, 4}, ramp(25)));
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 3); }),
            path("images") + ": 1 unexpected byte after the 24 the header promises");
  write_file(path("images"), idx_bytes({3, 2, 4}, ramp(26)));
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 3); }),
            path("images") + ": 2 unexpected bytes after the 24 the header promises");
}

TEST_F(IdxFiles, ZeroDimensionIsNamed) {
  write_file(path("images"), idx_bytes({3, 0, 4}, {}));
  EXPECT_EQ(error_of([&] { read_idx(path("images"), 3); }), path("images") + ": dimension 1 is 0");
}

// 2^31 * 2^31 * 4 = 2^64: a 64-bit product of the sizes wraps to 0 and an empty payload
// would then look complete. The header promises 2^64 bytes; the file has none.
TEST_F(IdxFiles, DimensionProductOverflowIsRejected) {
  write_file(path("images"), idx_bytes({0x80000000u, 0x80000000u, 4}, {}));
  IdxArray array;
  const std::string message = error_of([&] { array = read_idx(path("images"), 3); });
  EXPECT_EQ(message.rfind(path("images") + ": ", 0), 0u)
      << message << "; accepted dims " << ::testing::PrintToString(array.dims) << " with " << array.data.size()
      << " bytes of data";
  EXPECT_EQ(message, path("images") + ": dimensions [2147483648, 2147483648, 4]: the element count overflows 64 bits");

  // The largest sizes overflow too; a product that fits but exceeds the file is truncated.
  write_file(path("big"), idx_bytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, {}));
  EXPECT_EQ(error_of([&] { read_idx(path("big"), 3); }),
            path("big") + ": dimensions [4294967295, 4294967295, 4294967295]: the element count overflows 64 bits");
  write_file(path("fits"), idx_bytes({0x10000u, 0x10000u, 0xffffu}, {}));
  EXPECT_EQ(error_of([&] { read_idx(path("fits"), 3); }),
            path("fits") + ": truncated: the header promises 281470681743360 bytes of data, found 0");
}

TEST_F(IdxFiles, MissingFileIsNamed) {
  EXPECT_EQ(error_of([&] { read_idx(path("absent"), 3); }), path("absent") + ": cannot open: " + std::strerror(ENOENT));
  EXPECT_EQ(error_of([&] { read_maybe_gzipped(path("absent.gz")); }), path("absent.gz") + ": cannot open: " + std::strerror(ENOENT));
  // A directory opens but cannot be read.
  EXPECT_EQ(error_of([&] { read_idx(directory_.string(), 3); }), directory_.string() + ": read error: " + std::strerror(EISDIR));
}

TEST_F(IdxFiles, TruncatedGzipIsNamed) {
  write_gzip(path("full.gz"), idx_bytes({50, 28, 28}, ramp(50 * 28 * 28)));
  const Bytes full = read_file(path("full.gz"));
  ASSERT_GT(full.size(), 40u);
  // Inside the gzip header, inside the deflate stream, inside the 8-byte CRC/size trailer.
  for (std::size_t cut : {std::size_t{2}, std::size_t{5}, std::size_t{12}, full.size() / 2, full.size() - 8, full.size() - 5,
                          full.size() - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(full.size()));
    write_file(path("cut.gz"), Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut)));
    const std::string message = error_of([&] { read_idx(path("cut.gz"), 3); });
    EXPECT_EQ(message.rfind(path("cut.gz") + ": ", 0), 0u) << message;
    EXPECT_NE(message.find("truncated gzip data"), std::string::npos) << message;
  }
}

TEST_F(IdxFiles, CorruptGzipIsNamed) {
  write_gzip(path("full.gz"), idx_bytes({2}, {1, 2}));
  Bytes bytes = read_file(path("full.gz"));
  bytes[bytes.size() - 6] ^= 0xff;  // inside the CRC-32 of the trailer
  write_file(path("bad-crc.gz"), bytes);
  const std::string message = error_of([&] { read_idx(path("bad-crc.gz"), 1); });
  EXPECT_EQ(message.rfind(path("bad-crc.gz") + ": corrupt or truncated gzip data (", 0), 0u) << message;
  EXPECT_NE(message.find("incorrect data check"), std::string::npos) << message;
}

// A gzip file may hold several members (RFC 1952 section 2.2; `cat a.gz b.gz`, bgzip);
// gunzip yields their concatenation.
TEST_F(IdxFiles, ConcatenatedGzipMembersAreOneStream) {
  const Bytes whole = idx_bytes({2, 2, 3}, ramp(12));
  write_gzip(path("part1.gz"), Bytes(whole.begin(), whole.begin() + 10));
  write_gzip(path("part2.gz"), Bytes(whole.begin() + 10, whole.end()));
  Bytes joined = read_file(path("part1.gz"));
  const Bytes second = read_file(path("part2.gz"));
  joined.insert(joined.end(), second.begin(), second.end());
  write_file(path("joined.gz"), joined);
  IdxArray array;
  EXPECT_EQ(error_of([&] { array = read_idx(path("joined.gz"), 3); }), "no error");
  EXPECT_EQ(array.data, ramp(12));
}

TEST_F(IdxFiles, EveryGzipMemberIsRead) {
  // Three members, the middle one larger than the reader's 64 KiB inflate buffer, one empty.
  const Bytes whole = idx_bytes({100, 28, 28}, ramp(100 * 28 * 28, 5));
  write_gzip(path("1.gz"), Bytes(whole.begin(), whole.begin() + 3));
  write_gzip(path("2.gz"), Bytes(whole.begin() + 3, whole.end() - 100));
  write_gzip(path("3.gz"), Bytes{});
  write_gzip(path("4.gz"), Bytes(whole.end() - 100, whole.end()));
  Bytes joined;
  for (const char* part : {"1.gz", "2.gz", "3.gz", "4.gz"}) {
    const Bytes bytes = read_file(path(part));
    joined.insert(joined.end(), bytes.begin(), bytes.end());
  }
  write_file(path("joined.gz"), joined);
  EXPECT_EQ(read_maybe_gzipped(path("joined.gz")), whole);

  // The last member cut short: truncated, not a shorter file.
  write_file(path("cut.gz"), Bytes(joined.begin(), joined.end() - 10));
  std::string message = error_of([&] { read_maybe_gzipped(path("cut.gz")); });
  EXPECT_EQ(message.rfind(path("cut.gz") + ": ", 0), 0u) << message;
  EXPECT_NE(message.find("truncated gzip data"), std::string::npos) << message;

  // Bytes after a member that are not another member are refused, not ignored.
  Bytes garbage = joined;
  garbage.insert(garbage.end(), {'x', 'y', 'z'});
  write_file(path("garbage.gz"), garbage);
  EXPECT_EQ(error_of([&] { read_maybe_gzipped(path("garbage.gz")); }),
            path("garbage.gz") + ": 3 bytes after gzip member 4 (at byte " + std::to_string(joined.size()) +
                ") that are not another gzip member");
}

TEST_F(IdxFiles, DatasetLoadsRawAndGzipFiles) {
  write_gzip(path("images.gz"), idx_bytes({3, 2, 2}, ramp(12)));
  write_file(path("labels"), idx_bytes({3}, {9, 0, 4}));
  const Dataset dataset = load_idx_dataset(path("images.gz"), path("labels"));
  EXPECT_EQ(dataset.count, 3);
  EXPECT_EQ(dataset.height, 2);
  EXPECT_EQ(dataset.width, 2);
  EXPECT_EQ(dataset.images, ramp(12));
  EXPECT_EQ(dataset.labels, (std::vector<std::int32_t>{9, 0, 4}));
  EXPECT_EQ(dataset.source, path("images.gz"));

  const Dataset limited = load_idx_dataset(path("images.gz"), path("labels"), 10, 2);
  EXPECT_EQ(limited.count, 2);
  EXPECT_EQ(limited.images, ramp(8));
  EXPECT_EQ(limited.labels, (std::vector<std::int32_t>{9, 0}));
}

TEST_F(IdxFiles, DatasetLabelOutOfRangeIsNamed) {
  write_file(path("images"), idx_bytes({3, 2, 2}, ramp(12)));
  write_file(path("labels"), idx_bytes({3}, {0, 10, 3}));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("images"), path("labels")); }),
            path("labels") + ": label 1 is 10; labels must be in [0, 10)");
  write_file(path("labels"), idx_bytes({3}, {0, 1, 255}));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("images"), path("labels")); }),
            path("labels") + ": label 2 is 255; labels must be in [0, 10)");
  write_file(path("labels"), idx_bytes({3}, {0, 2, 3}));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("images"), path("labels"), 3); }),
            path("labels") + ": label 2 is 3; labels must be in [0, 3)");
}

TEST_F(IdxFiles, DatasetCountMismatchNamesBothFiles) {
  write_file(path("images"), idx_bytes({3, 2, 2}, ramp(12)));
  write_file(path("labels"), idx_bytes({2}, {0, 1}));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("images"), path("labels")); }),
            path("images") + " has 3 images but " + path("labels") + " has 2 labels");
}

TEST_F(IdxFiles, DatasetWithSwappedFilesNamesTheRank) {
  write_file(path("images"), idx_bytes({3, 2, 2}, ramp(12)));
  write_file(path("labels"), idx_bytes({3}, {0, 1, 2}));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("labels"), path("images")); }), path("labels") + ": rank: expected 3, found 1");
}

TEST_F(IdxFiles, DatasetMissingFilesAreNamed) {
  write_file(path("images"), idx_bytes({3, 2, 2}, ramp(12)));
  EXPECT_EQ(error_of([&] { load_idx_dataset(path("images"), path("absent-labels")); }), path("absent-labels") + ": cannot open: " + std::strerror(ENOENT));
  EXPECT_EQ(error_of([&] { load_dataset(path("no-such-directory"), Split::train); }),
            path("no-such-directory") + ": no such dataset (fashion-mnist, mnist) or directory");

  fs::create_directories(path("data"));
  write_gzip(path("data/train-images-idx3-ubyte.gz"), idx_bytes({3, 2, 2}, ramp(12)));
  EXPECT_EQ(error_of([&] { load_dataset(path("data"), Split::train); }),
            path("data") + ": no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz");
  write_file(path("data/t10k-labels-idx1-ubyte"), idx_bytes({3}, {5, 6, 7}));
  EXPECT_EQ(error_of([&] { load_dataset(path("data"), Split::test); }),
            path("data") + ": no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz");

  write_file(path("data/train-labels-idx1-ubyte"), idx_bytes({3}, {5, 6, 7}));
  const Dataset dataset = load_dataset(path("data"), Split::train);
  EXPECT_EQ(dataset.count, 3);
  EXPECT_EQ(dataset.labels, (std::vector<std::int32_t>{5, 6, 7}));
  EXPECT_EQ(dataset.source, path("data/train-images-idx3-ubyte.gz"));
}

}  // namespace
}  // namespace ember
