#include "engine/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace ember {
namespace {

using Json = nlohmann::json;

std::size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "I64") return 8;
  return 0;
}

std::string shape_text(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

std::int64_t SafetensorsTensor::elements() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
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
    if (std::ferror(f.get())) throw Error(path + ": read error");
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
  Json header;
  try {
    header = Json::parse(reinterpret_cast<const char*>(bytes.data() + 8), reinterpret_cast<const char*>(bytes.data() + 8 + header_length));
  } catch (const Json::parse_error& e) {
    throw Error(path + ": the header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw Error(path + ": the header must be a JSON object");
  const std::span<const std::byte> data(bytes.data() + 8 + header_length, bytes.size() - 8 - header_length);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
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
    if (!entry["dtype"].is_string() || dtype_size(entry["dtype"].get<std::string>()) == 0) {
      throw Error(where + ": dtype must be F32, I32 or I64, found " + entry["dtype"].dump());
    }
    tensor.dtype = entry["dtype"].get<std::string>();
    if (!entry["shape"].is_array()) throw Error(where + ": shape must be an array, found " + entry["shape"].dump());
    for (const Json& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) throw Error(where + ": bad shape " + entry["shape"].dump());
      tensor.shape.push_back(d.get<std::int64_t>());
    }
    const Json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      throw Error(where + ": data_offsets must be [begin, end], found " + offsets.dump());
    }
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    const std::uint64_t expected = static_cast<std::uint64_t>(tensor.elements()) * dtype_size(tensor.dtype);
    if (end < begin || end - begin != expected) {
      throw Error(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] hold " +
                  std::to_string(end >= begin ? end - begin : 0) + " bytes; shape " + shape_text(tensor.shape) + " of " +
                  tensor.dtype + " needs " + std::to_string(expected));
    }
    if (end > data.size()) {
      throw Error(where + ": data ends at byte " + std::to_string(end) + " of the data section, which has only " +
                  std::to_string(data.size()) + " (truncated file)");
    }
    tensor.data = data.subspan(begin, end - begin);
    ranges.emplace_back(begin, end);
    file.tensors_[name] = std::move(tensor);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) throw Error(path + ": two tensors' data_offsets overlap");
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
  return {reinterpret_cast<const float*>(t.data.data()), static_cast<std::size_t>(t.elements())};
}

void write_safetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const TensorToWrite& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const TensorToWrite* a, const TensorToWrite* b) { return a->name < b->name; });
  Json header = Json::object();
  std::uint64_t offset = 0;
  for (const TensorToWrite* t : sorted) {
    std::int64_t elements = 1;
    for (std::int64_t d : t->shape) elements *= d;
    if (static_cast<std::size_t>(elements) != t->values.size()) {
      throw Error(path + ": tensor '" + t->name + "' has " + std::to_string(t->values.size()) + " values for shape " +
                  shape_text(t->shape));
    }
    if (header.contains(t->name)) throw Error(path + ": tensor '" + t->name + "' given twice");
    header[t->name] = {{"dtype", "F32"}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->values.size() * 4}}};
    offset += t->values.size() * 4;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned

  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(path + ": cannot write (creating " + temporary + "): " + std::strerror(errno));
  auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    ::close(fd);
    ::unlink(temporary.c_str());
    throw Error(path + ": " + what + ": " + reason + "; the previous file, if any, is untouched");
  };
  auto write_all = [&](const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write failed");
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  };
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  write_all(length, 8);
  write_all(text.data(), text.size());
  for (const TensorToWrite* t : sorted) write_all(t->values.data(), t->values.size() * sizeof(float));  // x86: little-endian
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    ::unlink(temporary.c_str());
    throw Error(path + ": close failed: " + std::strerror(errno));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temporary.c_str());
    throw Error(path + ": rename failed: " + reason + "; the previous file, if any, is untouched");
  }
  // Make the rename itself durable.
  const std::string directory = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  if (const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace ember
