#include "engine/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/json_text.h"
#include "engine/text.h"

namespace ember {
namespace {

using Json = nlohmann::json;

std::size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "I64") return 8;
  return 0;
}

std::string shape_text(std::span<const std::int64_t> shape) {
  return "[" + join(shape) + "]";
}

std::string unexpected_bytes(std::uint64_t count) {
  return std::to_string(count) + (count == 1 ? " unexpected byte" : " unexpected bytes");
}

// The shape's byte size for elements of `element_size` bytes; nullopt if it does not fit in
// 64 bits (computed unchecked, [2^62] of F32 would need 0 bytes). Dimensions are >= 0.
std::optional<std::uint64_t> byte_size(std::span<const std::int64_t> shape, std::uint64_t element_size) {
  std::uint64_t bytes = element_size;
  for (const std::int64_t d : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes)) return std::nullopt;
  }
  return bytes;
}

// True if nlohmann::json can write `text` (it must be valid UTF-8).
bool writable_as_json(const std::string& text) {
  try {
    (void)Json(text).dump();
    return true;
  } catch (const Json::type_error&) {
    return false;
  }
}

struct Range {
  std::uint64_t begin, end;
  const std::string* name;
};

std::string range_text(const Range& range) {
  return "'" + *range.name + "' (data_offsets [" + std::to_string(range.begin) + ", " + std::to_string(range.end) + "])";
}

}  // namespace

std::int64_t SafetensorsTensor::elements() const {
  std::int64_t n = 1;
  for (const std::int64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) throw Error("shape " + shape_text(shape) + ": the element count overflows 64 bits");
  }
  return n;
}

SafetensorsFile SafetensorsFile::read(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;
  {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
    std::byte chunk[1 << 16];
    while (std::size_t n = std::fread(chunk, 1, sizeof chunk, f.get())) file.buffer_.insert(file.buffer_.end(), chunk, chunk + n);
    if (std::ferror(f.get())) throw Error(path + ": read error: " + std::strerror(errno));
  }
  const std::vector<std::byte>& bytes = file.buffer_;
  if (bytes.size() < 8) {
    throw Error(path + ": truncated: a safetensors file starts with an 8-byte header length, found " + std::to_string(bytes.size()) +
                " bytes");
  }
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
  if (header_length > bytes.size() - 8) {
    throw Error(path + ": header length " + std::to_string(header_length) + " is beyond the file's " + std::to_string(bytes.size()) +
                " bytes (truncated or not a safetensors file)");
  }
  const Json header = parse_json(std::string_view(reinterpret_cast<const char*>(bytes.data() + 8), header_length), path + ": the header");
  if (!header.is_object()) throw Error(path + ": the header must be a JSON object");
  const std::span<const std::byte> data(bytes.data() + 8 + header_length, bytes.size() - 8 - header_length);
  std::vector<Range> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw Error(path + ": __metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw Error(path + ": __metadata__." + key + " must be a string, found " + value.dump());
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets")) {
      throw Error(where + ": needs dtype, shape and data_offsets");
    }
    SafetensorsTensor tensor;
    const Json& dtype = entry.at("dtype");
    if (!dtype.is_string() || dtype_size(dtype.get<std::string>()) == 0) {
      throw Error(where + ": dtype must be F32, I32 or I64, found " + dtype.dump());
    }
    tensor.dtype = dtype.get<std::string>();
    const Json& shape = entry.at("shape");
    if (!shape.is_array()) throw Error(where + ": shape must be an array, found " + shape.dump());
    for (const Json& d : shape) {
      // Sizes beyond INT64_MAX arrive as unsigned and read back negative: refused too.
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) throw Error(where + ": bad shape " + shape.dump());
      tensor.shape.push_back(d.get<std::int64_t>());
    }
    const Json& offsets = entry.at("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw Error(where + ": data_offsets must be [begin, end], found " + offsets.dump());
    }
    const std::optional<std::uint64_t> expected = byte_size(tensor.shape, dtype_size(tensor.dtype));
    if (!expected) {
      throw Error(where + ": shape " + shape_text(tensor.shape) + " of " + tensor.dtype +
                  " is too large: its size in bytes overflows 64 bits");
    }
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (end < begin || end - begin != *expected) {
      throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                  std::to_string(end >= begin ? end - begin : 0) + " bytes; shape " + shape_text(tensor.shape) + " of " +
                  tensor.dtype + " needs " + std::to_string(*expected));
    }
    if (end > data.size()) {
      throw Error(where + ": data ends at byte " + std::to_string(end) + " of the data section, which has only " +
                  std::to_string(data.size()) + " (truncated file)");
    }
    tensor.data = data.subspan(begin, end - begin);
    const auto [it, inserted] = file.tensors_.emplace(name, std::move(tensor));
    ranges.push_back({begin, end, &it->first});
  }
  // The format (and the Hugging Face reader) demands that the tensors, sorted by offset,
  // tile the data section: each begins where the previous one ends, the last one ends at
  // the end of the file. Bytes outside every tensor are refused, not ignored.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (ranges[i].begin < covered) {
      throw Error(path + ": tensors " + range_text(ranges[i - 1]) + " and " + range_text(ranges[i]) + ": data_offsets overlap");
    }
    if (ranges[i].begin > covered) {
      throw Error(path + ": bytes [" + std::to_string(covered) + ", " + std::to_string(ranges[i].begin) +
                  ") of the data section belong to no tensor (" +
                  (i == 0 ? "before " + range_text(ranges[i]) : "between " + range_text(ranges[i - 1]) + " and " + range_text(ranges[i])) +
                  ")");
    }
    covered = ranges[i].end;
  }
  if (covered < data.size()) {
    const std::string extra = unexpected_bytes(data.size() - covered);
    if (ranges.empty()) throw Error(path + ": " + extra + " of data in a file with no tensors");
    throw Error(path + ": " + extra + " after the last tensor's data: " + range_text(ranges.back()) + " ends at byte " +
                std::to_string(covered) + " of a " + std::to_string(data.size()) + "-byte data section");
  }
  return file;
}

const SafetensorsTensor& SafetensorsFile::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": no tensor '" + name + "'");
  return it->second;
}

std::span<const float> SafetensorsFile::floats(const std::string& name, std::span<const std::int64_t> shape) const {
  const SafetensorsTensor& t = tensor(name);
  if (t.dtype != "F32") throw Error(path_ + ": tensor '" + name + "' has dtype " + t.dtype + ", expected F32");
  if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
    throw Error(path_ + ": tensor '" + name + "' has shape " + shape_text(t.shape) + ", expected " + shape_text(shape));
  }
  return {reinterpret_cast<const float*>(t.data.data()), t.data.size() / sizeof(float)};
}

void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Everything the reader checks is checked here first, before a byte is written.
  std::vector<const TensorToWrite*> sorted;
  for (const TensorToWrite& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const TensorToWrite& t = *sorted[i];
    const std::string where = path + ": tensor '" + t.name + "'";
    if (t.name == "__metadata__") throw Error(where + ": the name is reserved for the header's metadata");
    if (!writable_as_json(t.name)) throw Error(where + ": the name is not valid UTF-8");
    if (i > 0 && sorted[i - 1]->name == t.name) throw Error(where + " given twice");
    if (std::any_of(t.shape.begin(), t.shape.end(), [](std::int64_t d) { return d < 0; })) {
      throw Error(where + ": bad shape " + shape_text(t.shape) + ": dimensions must be >= 0");
    }
    const std::optional<std::uint64_t> bytes = byte_size(t.shape, sizeof(float));
    if (!bytes || *bytes != t.values.size() * sizeof(float)) {
      throw Error(where + " has " + std::to_string(t.values.size()) + " values for shape " + shape_text(t.shape));
    }
  }
  for (const auto& [key, value] : metadata) {
    if (!writable_as_json(key) || !writable_as_json(value)) {
      throw Error(path + ": __metadata__ entry '" + key + "': keys and values must be valid UTF-8");
    }
  }
  Json header = Json::object();
  std::uint64_t offset = 0;
  for (const TensorToWrite* t : sorted) {
    header[t->name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->values.size() * 4}}};
    offset += t->values.size() * 4;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned

  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  std::vector<std::span<const std::byte>> parts{std::as_bytes(std::span(length)), std::as_bytes(std::span(text))};
  for (const TensorToWrite* t : sorted) parts.push_back(std::as_bytes(t->values));  // x86: little-endian
  write_file_atomically(path, parts);
}

}  // namespace ember
