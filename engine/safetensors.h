#pragma once
// The safetensors format (Hugging Face): 8 bytes of little-endian header length, a JSON
// header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the raw little-endian data. numpy and PyTorch users read it without ember.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace ember {

struct SafetensorsTensor {
  std::string dtype;                 // "F32", "I64" or "I32"
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;   // inside the file's buffer
  // The product of the shape; an ember::Error if it does not fit in 64 bits (never for a
  // tensor of a file SafetensorsFile::read accepted).
  std::int64_t elements() const;
};

// Move-only: every tensor's `data` points into the file's own buffer, which a copy would
// not own (a move keeps the buffer, so the views stay valid).
class SafetensorsFile {
 public:
  // Reads and validates the whole file as the format demands: every tensor's byte size
  // (checked for overflow) matches its data_offsets, and the tensors' data, sorted by
  // offset, covers the data section exactly (no overlap, no gap, nothing after the last
  // tensor). Errors name the file and the field.
  static SafetensorsFile read(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, SafetensorsTensor>& tensors() const { return tensors_; }
  // The tensor, which must exist with dtype F32 and the given shape (errors say which
  // and what was found).
  std::span<const float> floats(const std::string& name, std::span<const std::int64_t> shape) const;
  const SafetensorsTensor& tensor(const std::string& name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  std::vector<std::byte> buffer_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, SafetensorsTensor> tensors_;
};

struct TensorToWrite {
  std::string name;
  std::vector<std::int64_t> shape;
  std::span<const float> values;  // F32
};

// Writes atomically: a temporary file beside `path` (named `path`.tmp-<pid>-<thread
// id>-<counter>, so concurrent writers never share one), flushed and fsynced, then
// renamed over `path` (and the directory fsynced). On any failure the temporary is
// removed and whatever was at `path` before is untouched. What the reader would refuse
// (the reserved name "__metadata__", negative dimensions, a value count that does not
// match the shape, a name given twice, text that is not UTF-8) is refused before
// anything is written.
void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace ember
