// Bad-input handling of engine/safetensors: the reader must refuse truncated and
// malformed files with a message naming the file and the field, and the writer must be
// atomic (no temporary left behind, an existing file untouched when writing fails).
#include "engine/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "support/file_helpers.h"
#include "support/scratch_mount.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::FileSizeLimit;
using testing::contains;
using testing::error_of;
using testing::header_length_of;
using testing::read_file;
using testing::ScratchMount;
using testing::starts_with;
using testing::write_file;

// A hand-made file: little-endian length, the header text as given, then `data`.
Bytes safetensors_bytes(const std::string& header, const Bytes& data, std::uint64_t length_field) {
  Bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(length_field >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}
Bytes safetensors_bytes(const std::string& header, const Bytes& data) {
  return safetensors_bytes(header, data, header.size());
}

std::uint32_t bits(float value) {
  std::uint32_t b;
  std::memcpy(&b, &value, sizeof b);
  return b;
}
float from_bits(std::uint32_t b) {
  float value;
  std::memcpy(&value, &b, sizeof value);
  return value;
}

class SafetensorsFiles : public testing::TempDirectoryTest {
 protected:
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(directory_)) names.insert(entry.path().filename().string());
    return names;
  }
  // The writer's temporaries are named <path>.tmp-<pid>-<thread id>-<counter>.
  std::string temporary_prefix_for(const std::string& name) const { return path(name) + ".tmp-" + std::to_string(::getpid()) + "-"; }

  // A small valid file: tensors "a" (2 x 3), "b" (4) and metadata.
  void write_sample(const std::string& name) {
    const TensorToWrite tensors[] = {{"b", {4}, b_}, {"a", {2, 3}, a_}};
    write_safetensors(path(name), tensors, {{"k", "v"}});
  }

  std::vector<float> a_{1, 2, 3, 4, 5, 6};
  std::vector<float> b_{-1, -2, -3, -4};
};

TEST_F(SafetensorsFiles, WriterOutputReadsBackBitwise) {
  // Values whose bits a lossy path would change: NaN payloads, -0, infinities, denormals.
  const std::vector<float> special = {from_bits(0x7fc12345u), from_bits(0xffa00001u), -0.0f,
                                      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                      std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                                      std::numeric_limits<float>::lowest(), 1.0f / 3.0f};
  const std::vector<float> scalar = {42.5f};
  const std::vector<float> empty;
  const std::vector<float> odd = {1, 2, 3};  // 12 bytes: the next tensor starts unaligned to 8
  const TensorToWrite tensors[] = {
      {"z.special", {3, 3}, special}, {"odd", {3}, odd}, {"scalar", {}, scalar}, {"empty", {0, 5}, empty}};
  const std::map<std::string, std::string> metadata{{"format", "test"}, {"json", R"({"a": [1, 2], "quote": "\""})"}};
  write_safetensors(path("t.safetensors"), tensors, metadata);
  EXPECT_EQ(listing(), std::set<std::string>{"t.safetensors"});  // no temporary left behind

  const Bytes raw = read_file(path("t.safetensors"));
  EXPECT_EQ(header_length_of(raw) % 8, 0u) << "the data must start 8-byte aligned";

  const SafetensorsFile file = SafetensorsFile::read(path("t.safetensors"));
  EXPECT_EQ(file.path(), path("t.safetensors"));
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.tensors().size(), 4u);
  for (const TensorToWrite& t : tensors) {
    SCOPED_TRACE(t.name);
    const SafetensorsTensor& read = file.tensor(t.name);
    EXPECT_EQ(read.dtype, "F32");
    EXPECT_EQ(read.shape, t.shape);
    const std::span<const float> values = file.floats(t.name, t.shape);
    ASSERT_EQ(values.size(), t.values.size());
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(bits(values[i]), bits(t.values[i])) << i;
  }
}

TEST_F(SafetensorsFiles, MissingFileIsNamed) {
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("absent")); }), path("absent") + ": cannot open: No such file or directory");
}

TEST_F(SafetensorsFiles, TruncationAtEveryPointIsRefused) {
  write_sample("full");
  const Bytes full = read_file(path("full"));
  const std::uint64_t header = header_length_of(full);
  ASSERT_EQ(full.size(), 8 + header + 40);
  // Shrink one file step by step (rewriting a truncated file makes ext4 flush it on close).
  write_file(path("cut"), full);
  for (std::size_t cut = full.size(); cut-- > 0;) {
    fs::resize_file(path("cut"), cut);
    const std::string message = error_of([&] { SafetensorsFile::read(path("cut")); });
    EXPECT_TRUE(starts_with(message, path("cut") + ": ")) << "cut at " << cut << ": " << message;
    EXPECT_TRUE(contains(message, "truncated")) << "cut at " << cut << ": " << message;
  }

  auto message_at = [&](std::size_t cut) {
    write_file(path("cut"), Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut)));
    return error_of([&] { SafetensorsFile::read(path("cut")); });
  };
  // Inside the 8-byte length.
  EXPECT_EQ(message_at(0), path("cut") + ": truncated: a safetensors file starts with an 8-byte header length, found 0 bytes");
  EXPECT_EQ(message_at(5), path("cut") + ": truncated: a safetensors file starts with an 8-byte header length, found 5 bytes");
  // Inside the JSON header.
  const std::size_t in_header = 8 + header / 2;
  EXPECT_EQ(message_at(in_header), path("cut") + ": header length " + std::to_string(header) + " is beyond the file's " +
                                       std::to_string(in_header) + " bytes (truncated or not a safetensors file)");
  // Inside the data: "a" holds bytes [0, 24) and "b" [24, 40) of the data section.
  EXPECT_EQ(message_at(8 + header + 10),
            path("cut") + ": tensor 'a': data ends at byte 24 of the data section, which has only 10 (truncated file)");
  EXPECT_EQ(message_at(full.size() - 1),
            path("cut") + ": tensor 'b': data ends at byte 40 of the data section, which has only 39 (truncated file)");
}

TEST_F(SafetensorsFiles, HeaderLengthBeyondTheFileIsRefused) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_file(path("f"), safetensors_bytes(header, Bytes(4), 1000));
  const std::size_t size = 8 + header.size() + 4;
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("f")); }),
            path("f") + ": header length 1000 is beyond the file's " + std::to_string(size) +
                " bytes (truncated or not a safetensors file)");
  // A length that would overflow `8 + length`.
  write_file(path("g"), safetensors_bytes(header, Bytes(4), ~std::uint64_t{0}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("g")); }),
            path("g") + ": header length 18446744073709551615 is beyond the file's " + std::to_string(size) +
                " bytes (truncated or not a safetensors file)");
}

TEST_F(SafetensorsFiles, HeaderThatIsNotJsonIsRefused) {
  write_file(path("f"), safetensors_bytes(R"({"a": {"dtype": "F32", )", Bytes(4)));
  std::string message = error_of([&] { SafetensorsFile::read(path("f")); });
  EXPECT_TRUE(starts_with(message, path("f") + ": the header is not valid JSON: ")) << message;

  write_file(path("empty"), safetensors_bytes("", {}));
  message = error_of([&] { SafetensorsFile::read(path("empty")); });
  EXPECT_TRUE(starts_with(message, path("empty") + ": the header is not valid JSON: ")) << message;

  write_file(path("binary"), safetensors_bytes(std::string("\x89PNG\r\n\x1a\n", 8), {}));
  message = error_of([&] { SafetensorsFile::read(path("binary")); });
  EXPECT_TRUE(starts_with(message, path("binary") + ": the header is not valid JSON: ")) << message;

  write_file(path("array"), safetensors_bytes("[1, 2]", {}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("array")); }), path("array") + ": the header must be a JSON object");
}

TEST_F(SafetensorsFiles, OffsetsBeyondTheDataAreRefused) {
  write_file(path("f"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", Bytes(8)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("f")); }),
            path("f") + ": tensor 'a': data ends at byte 16 of the data section, which has only 8 (truncated file)");
  // begin beyond the data with a zero-length tensor.
  write_file(path("g"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[100,100]}})", Bytes(8)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("g")); }),
            path("g") + ": tensor 'a': data ends at byte 100 of the data section, which has only 8 (truncated file)");
}

TEST_F(SafetensorsFiles, OffsetsThatDisagreeWithTheShapeAreRefused) {
  write_file(path("short"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("short")); }),
            path("short") + ": tensor 'a': data_offsets [0, 12] hold 12 bytes; shape [4] of F32 needs 16");
  write_file(path("reversed"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("reversed")); }),
            path("reversed") + ": tensor 'a': data_offsets [16, 0] hold 0 bytes; shape [4] of F32 needs 16");
  write_file(path("i64"), safetensors_bytes(R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}})", Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("i64")); }),
            path("i64") + ": tensor 'a': data_offsets [0, 8] hold 8 bytes; shape [2] of I64 needs 16");
  write_file(path("negative"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-4,12]}})", Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("negative")); }),
            path("negative") + ": tensor 'a': data_offsets must be [begin, end], found [-4,12]");
}

TEST_F(SafetensorsFiles, OverlappingTensorsAreRefused) {
  write_file(path("f"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                          R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                                          Bytes(24)));
  const std::string message = error_of([&] { SafetensorsFile::read(path("f")); });
  EXPECT_TRUE(starts_with(message, path("f") + ": ")) << message;
  EXPECT_TRUE(contains(message, "data_offsets")) << message;
  EXPECT_TRUE(contains(message, "overlap")) << message;
  // Adjacent is fine.
  write_file(path("g"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                          R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                                          Bytes(24)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("g")); }), "no error");
}

TEST_F(SafetensorsFiles, UnsupportedDtypeIsRefused) {
  write_file(path("f16"), safetensors_bytes(R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", Bytes(8)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("f16")); }),
            path("f16") + ": tensor 'a': dtype must be F32, I32 or I64, found \"F16\"");
  write_file(path("number"), safetensors_bytes(R"({"a":{"dtype":7,"shape":[4],"data_offsets":[0,8]}})", Bytes(8)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("number")); }),
            path("number") + ": tensor 'a': dtype must be F32, I32 or I64, found 7");

  // I32 is readable, but not as floats.
  write_file(path("i32"), safetensors_bytes(R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", Bytes(8)));
  const SafetensorsFile file = SafetensorsFile::read(path("i32"));
  const std::int64_t shape[] = {2};
  EXPECT_EQ(error_of([&] { file.floats("a", shape); }), path("i32") + ": tensor 'a' has dtype I32, expected F32");
}

TEST_F(SafetensorsFiles, FloatsNamesMissingTensorsAndWrongShapes) {
  write_sample("f");
  const SafetensorsFile file = SafetensorsFile::read(path("f"));
  const std::int64_t wrong[] = {3, 2};
  EXPECT_EQ(error_of([&] { file.floats("a", wrong); }), path("f") + ": tensor 'a' has shape [2, 3], expected [3, 2]");
  EXPECT_EQ(error_of([&] { file.floats("c", wrong); }), path("f") + ": no tensor 'c'");
}

TEST_F(SafetensorsFiles, MalformedEntriesAreNamed) {
  auto message = [&](const std::string& header) {
    write_file(path("f"), safetensors_bytes(header, Bytes(16)));
    return error_of([&] { SafetensorsFile::read(path("f")); });
  };
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[4]}})"), path("f") + ": tensor 'a': needs dtype, shape and data_offsets");
  EXPECT_EQ(message(R"({"a":[1,2]})"), path("f") + ": tensor 'a': needs dtype, shape and data_offsets");
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":4,"data_offsets":[0,16]}})"),
            path("f") + ": tensor 'a': shape must be an array, found 4");
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})"), path("f") + ": tensor 'a': bad shape [-4]");
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}})"), path("f") + ": tensor 'a': bad shape [4.0]");
  EXPECT_EQ(message(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})"),
            path("f") + ": tensor 'a': data_offsets must be [begin, end], found [0]");
  EXPECT_EQ(message(R"({"__metadata__":{"k":1}})"), path("f") + ": __metadata__.k must be a string, found 1");
  EXPECT_EQ(message(R"({"__metadata__":[]})"), path("f") + ": __metadata__ must be an object of strings");
}

// shape [2^62] of F32 needs 2^64 bytes; computed in 64 bits that is 0, which an empty
// [0, 0] range would then satisfy, and floats() would hand out a 2^62-float view of
// nothing.
TEST_F(SafetensorsFiles, ShapeWhoseByteSizeOverflowsIsRefused) {
  write_file(path("f"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", {}));
  std::size_t view = 0;
  const std::string message = error_of([&] {
    const SafetensorsFile file = SafetensorsFile::read(path("f"));
    const std::int64_t shape[] = {std::int64_t{1} << 62};
    view = file.floats("a", shape).size();  // not dereferenced
  });
  EXPECT_TRUE(starts_with(message, path("f") + ": tensor 'a'"))
      << message << "; floats() gave a view of " << view << " floats over a 0-byte data section";
}

TEST_F(SafetensorsFiles, FailedWriteLeavesTheExistingFileAndNoTemporary) {
  write_sample("t");
  const Bytes before = read_file(path("t"));
  const std::vector<float> other(4, 9.0f);
  const TensorToWrite replacement[] = {{"x", {4}, other}};

  // The temporary cannot be created: the directory it would go in is a regular file.
  write_file(path("file"), Bytes{1});
  std::string message = error_of([&] { write_safetensors(path("file/t"), replacement, {}); });
  EXPECT_TRUE(starts_with(message, path("file/t") + ": cannot write (creating " + temporary_prefix_for("file/t"))) << message;
  EXPECT_TRUE(contains(message, std::strerror(ENOTDIR))) << message;
  fs::remove(path("file"));
  EXPECT_EQ(listing(), std::set<std::string>{"t"});

  // Writing fails half way (the disk is full): 16 bytes fit, the header does not.
  {
    std::string failed;
    {
      const FileSizeLimit limit(16);
      failed = error_of([&] { write_safetensors(path("t"), replacement, {}); });
    }
    EXPECT_EQ(failed, path("t") + ": write failed: " + std::strerror(EFBIG) + "; the previous file, if any, is untouched");
    EXPECT_EQ(read_file(path("t")), before);
    EXPECT_EQ(listing(), std::set<std::string>{"t"}) << "the temporary must be removed";
  }

  // The rename fails: the target is a non-empty directory.
  fs::create_directories(path("d/inside"));
  message = error_of([&] { write_safetensors(path("d"), replacement, {}); });
  EXPECT_TRUE(starts_with(message, path("d") + ": rename failed: ")) << message;
  EXPECT_TRUE(fs::is_directory(path("d/inside")));
  EXPECT_EQ(listing(), (std::set<std::string>{"d", "t"})) << "the temporary must be removed";

  // Bad arguments are refused before anything is written.
  const TensorToWrite mismatched[] = {{"x", {5}, other}};
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), mismatched, {}); }),
            path("t") + ": tensor 'x' has 4 values for shape [5]");
  const TensorToWrite twice[] = {{"x", {4}, other}, {"x", {4}, other}};
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), twice, {}); }), path("t") + ": tensor 'x' given twice");
  const TensorToWrite reserved[] = {{"__metadata__", {4}, other}};
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), reserved, {}); }),
            path("t") + ": tensor '__metadata__': the name is reserved for the header's metadata");
  const TensorToWrite negative[] = {{"x", {-1, -4}, other}};
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), negative, {}); }),
            path("t") + ": tensor 'x': bad shape [-1, -4]: dimensions must be >= 0");
  const TensorToWrite huge[] = {{"x", {std::int64_t{1} << 62, 4}, other}};  // 2^64 elements: wraps to 0 unchecked
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), huge, {}); }),
            path("t") + ": tensor 'x' has 4 values for shape [4611686018427387904, 4]");
  const TensorToWrite not_utf8[] = {{"x\xff", {4}, other}};
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), not_utf8, {}); }), path("t") + ": tensor 'x\xff': the name is not valid UTF-8");
  EXPECT_EQ(error_of([&] { write_safetensors(path("t"), replacement, {{"k", "\xc3"}}); }),
            path("t") + ": __metadata__ entry 'k': keys and values must be valid UTF-8");
  EXPECT_EQ(read_file(path("t")), before);
  EXPECT_EQ(listing(), (std::set<std::string>{"d", "t"}));

  // A missing directory.
  message = error_of([&] { write_safetensors(path("no-such-dir/t"), replacement, {}); });
  EXPECT_TRUE(starts_with(message, path("no-such-dir/t") + ": cannot write (creating ")) << message;
  EXPECT_TRUE(contains(message, std::strerror(ENOENT))) << message;
}

// Root ignores directory permissions, so as root (CI) the directory is a tmpfs remounted
// read-only, which stops root too; other users get a directory without write permission.
TEST_F(SafetensorsFiles, WriteIntoReadOnlyDirectoryLeavesTheExistingFile) {
  const bool root = ::geteuid() == 0;
  std::optional<ScratchMount> mount;
  if (root) {
    mount.emplace(directory_.string(), 1 << 20);
    if (!mount->mounted()) GTEST_SKIP() << "root ignores directory permissions, and " << mount->why_not();
  }
  write_sample("t");
  const Bytes before = read_file(path("t"));
  if (root) {
    const std::string failed = mount->make_read_only();
    ASSERT_EQ(failed, "");
  } else {
    fs::permissions(directory_, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  }
  const std::vector<float> other(4, 9.0f);
  const TensorToWrite replacement[] = {{"x", {4}, other}};
  const std::string message = error_of([&] { write_safetensors(path("t"), replacement, {}); });
  if (!root) fs::permissions(directory_, fs::perms::owner_all, fs::perm_options::replace);
  EXPECT_TRUE(starts_with(message, path("t") + ": cannot write (creating " + temporary_prefix_for("t"))) << message;
  EXPECT_TRUE(contains(message, std::strerror(root ? EROFS : EACCES))) << message;
  EXPECT_EQ(read_file(path("t")), before);
  EXPECT_EQ(listing(), std::set<std::string>{"t"});
}

// A filesystem that fills up during the write: a 64 KiB tmpfs holding the old file, and
// a new one of 128 KiB. Without the permission to mount one (root, CI), a file size limit
// stands in for it (the write fails with EFBIG instead of ENOSPC).
TEST_F(SafetensorsFiles, WriteOntoAFullFilesystemLeavesTheExistingFile) {
  ScratchMount mount(directory_.string(), 64 << 10);
  if (!mount.mounted()) std::printf("no tmpfs (%s): RLIMIT_FSIZE makes the write fail instead\n", mount.why_not().c_str());
  write_sample("t");
  const Bytes before = read_file(path("t"));
  const std::vector<float> large(32 << 10, 9.0f);
  const TensorToWrite replacement[] = {{"x", {32 << 10}, large}};
  std::string message;
  if (mount.mounted()) {
    message = error_of([&] { write_safetensors(path("t"), replacement, {}); });
  } else {
    const FileSizeLimit limit(64 << 10);
    message = error_of([&] { write_safetensors(path("t"), replacement, {}); });
  }
  EXPECT_EQ(message, path("t") + ": write failed: " + std::strerror(mount.mounted() ? ENOSPC : EFBIG) +
                         "; the previous file, if any, is untouched");
  EXPECT_EQ(read_file(path("t")), before);
  EXPECT_EQ(listing(), std::set<std::string>{"t"}) << "the temporary must be removed";
  // The space the temporary took is free again: a file that fits is written.
  if (mount.mounted()) {
    const std::vector<float> fits(8 << 10, 7.0f);
    const TensorToWrite smaller[] = {{"x", {8 << 10}, fits}};
    write_safetensors(path("t"), smaller, {});
    EXPECT_EQ(SafetensorsFile::read(path("t")).floats("x", std::vector<std::int64_t>{8 << 10})[0], 7.0f);
  }
}

TEST_F(SafetensorsFiles, SuccessfulWriteReplacesTheExistingFile) {
  write_sample("t");
  const std::vector<float> other(4, 9.0f);
  const TensorToWrite replacement[] = {{"x", {4}, other}};
  write_safetensors(path("t"), replacement, {});
  const SafetensorsFile file = SafetensorsFile::read(path("t"));
  EXPECT_EQ(file.tensors().size(), 1u);
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_EQ(listing(), std::set<std::string>{"t"});
}

// The writer must not produce a file its own reader refuses: "__metadata__" is the
// header's reserved key, and a shape with negative dimensions is not a shape. Either the
// writer refuses (naming the tensor) or the file reads back.
TEST_F(SafetensorsFiles, WriterRefusesWhatTheReaderWouldRefuse) {
  const std::vector<float> four(4, 1.0f);
  auto check = [&](const std::string& name, const TensorToWrite& tensor) {
    SCOPED_TRACE(name);
    const TensorToWrite tensors[] = {tensor};
    const std::string written = error_of([&] { write_safetensors(path(name), tensors, {}); });
    if (written == "no error") {
      EXPECT_EQ(error_of([&] { SafetensorsFile::read(path(name)); }), "no error") << "the writer accepted it";
    } else {
      EXPECT_TRUE(starts_with(written, path(name) + ": tensor '" + tensor.name + "'")) << written;
      EXPECT_FALSE(fs::exists(path(name)));
    }
  };
  check("reserved", {"__metadata__", {4}, four});
  check("negative", {"x", {-2, -2}, four});
}

// [2^32, 2^32] has 2^64 elements: the element count itself overflows (signed, in
// SafetensorsTensor::elements(), that is undefined behaviour).
TEST_F(SafetensorsFiles, ShapeWhoseElementCountOverflowsIsRefused) {
  write_file(path("f"), safetensors_bytes(R"({"a":{"dtype":"I32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", {}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("f")); }),
            path("f") + ": tensor 'a': shape [4294967296, 4294967296] of I32 is too large: its size in bytes overflows 64 bits");
  write_file(path("g"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", {}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("g")); }),
            path("g") + ": tensor 'a': shape [4611686018427387904] of F32 is too large: its size in bytes overflows 64 bits");
  // A zero dimension makes any other size harmless.
  write_file(path("h"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0,9223372036854775807],"data_offsets":[0,0]}})", {}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("h")); }), "no error");

  const SafetensorsTensor huge{"F32", {std::int64_t{1} << 32, std::int64_t{1} << 32}, {}};
  EXPECT_EQ(error_of([&] { huge.elements(); }), "shape [4294967296, 4294967296]: the element count overflows 64 bits");
}

TEST_F(SafetensorsFiles, OverlapNamesBothTensorsAndTheirOffsets) {
  write_file(path("f"), safetensors_bytes(R"({"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]},)"
                                          R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                          Bytes(24)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("f")); }),
            path("f") + ": tensors 'a' (data_offsets [0, 16]) and 'b' (data_offsets [8, 24]): data_offsets overlap");
  // A zero-length tensor inside another one overlaps it as well (the Hugging Face reader
  // refuses it too); one at a boundary does not.
  write_file(path("g"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                          R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                          Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("g")); }),
            path("g") + ": tensors 'a' (data_offsets [0, 16]) and 'e' (data_offsets [4, 4]): data_offsets overlap");
  write_file(path("h"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                          R"("e":{"dtype":"F32","shape":[0],"data_offsets":[16,16]},)"
                                          R"("z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})",
                                          Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("h")); }), "no error");
}

// The format has the tensors tile the data section: no byte belongs to no tensor, and the
// file ends where the last tensor does (the Hugging Face reader refuses both).
TEST_F(SafetensorsFiles, DataOutsideEveryTensorIsRefused) {
  write_file(path("gap"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                                            Bytes(24)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("gap")); }),
            path("gap") + ": bytes [8, 16) of the data section belong to no tensor (between 'a' (data_offsets [0, 8]) and "
                          "'b' (data_offsets [16, 24]))");
  write_file(path("front"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", Bytes(16)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("front")); }),
            path("front") + ": bytes [0, 8) of the data section belong to no tensor (before 'a' (data_offsets [8, 16]))");
  write_file(path("one"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", Bytes(17)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("one")); }),
            path("one") + ": 1 unexpected byte after the last tensor's data: 'a' (data_offsets [0, 16]) ends at byte 16 of a "
                          "17-byte data section");
  write_file(path("more"), safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", Bytes(40)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("more")); }),
            path("more") + ": 24 unexpected bytes after the last tensor's data: 'a' (data_offsets [0, 16]) ends at byte 16 of a "
                           "40-byte data section");
  write_file(path("none"), safetensors_bytes(R"({"__metadata__":{"k":"v"}})", Bytes(3)));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("none")); }),
            path("none") + ": 3 unexpected bytes of data in a file with no tensors");
  write_file(path("empty"), safetensors_bytes(R"({"__metadata__":{"k":"v"}})", {}));
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(path("empty")).metadata().at("k"); }), "no error");

  // The committed golden, written by tests/pytorch/make_goldens.py, tiles its data too.
  EXPECT_EQ(error_of([&] { SafetensorsFile::read(std::string(EMBER_TEST_DATA_DIR) + "/seed_cnn_golden.safetensors"); }),
            "no error");
}

// The tensors' views point into the file's buffer: a copy would point into another
// object's buffer, a move keeps the buffer and so the views.
static_assert(!std::is_copy_constructible_v<SafetensorsFile>);
static_assert(!std::is_copy_assignable_v<SafetensorsFile>);
static_assert(std::is_move_constructible_v<SafetensorsFile>);
static_assert(std::is_move_assignable_v<SafetensorsFile>);

TEST_F(SafetensorsFiles, MovedFileKeepsItsViews) {
  write_sample("f");
  write_sample("g");
  SafetensorsFile first = SafetensorsFile::read(path("f"));
  SafetensorsFile moved(std::move(first));
  const std::int64_t shape[] = {2, 3};
  const std::span<const float> a = moved.floats("a", shape);
  EXPECT_EQ(std::vector<float>(a.begin(), a.end()), a_);
  SafetensorsFile assigned = SafetensorsFile::read(path("g"));
  assigned = std::move(moved);
  const std::span<const float> again = assigned.floats("a", shape);
  EXPECT_EQ(again.data(), a.data());
  EXPECT_EQ(std::vector<float>(again.begin(), again.end()), a_);
  EXPECT_EQ(assigned.path(), path("f"));
}

// Several threads replace one file at once: each write is whole (every reader sees one
// writer's file), none fails, and no temporary is left behind. With one temporary name
// per process the writers would truncate and rename each other's temporaries.
TEST_F(SafetensorsFiles, ConcurrentWritersOfOneFileDoNotCollide) {
  constexpr int writers = 4, writes = 25;
  std::vector<std::string> failures(writers);
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const std::vector<float> values(64, static_cast<float>(w));
      const TensorToWrite tensors[] = {{"x", {8, 8}, values}};
      for (int i = 0; i < writes && failures[static_cast<std::size_t>(w)].empty(); ++i) {
        const std::string message = error_of([&] { write_safetensors(path("t"), tensors, {{"writer", std::to_string(w)}}); });
        if (message != "no error") failures[static_cast<std::size_t>(w)] = message;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int w = 0; w < writers; ++w) EXPECT_EQ(failures[static_cast<std::size_t>(w)], "") << "writer " << w;
  const SafetensorsFile file = SafetensorsFile::read(path("t"));
  const int writer = std::stoi(file.metadata().at("writer"));
  const std::int64_t shape[] = {8, 8};
  for (const float value : file.floats("x", shape)) EXPECT_EQ(value, static_cast<float>(writer));
  EXPECT_EQ(listing(), std::set<std::string>{"t"});
}

}  // namespace
}  // namespace ember
