#include "engine/image_folder.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <thread>

#include "engine/error.h"
#include "engine/image_decode.h"

namespace ember {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* extension : {".png", ".jpg", ".jpeg"}) {
    const std::size_t n = std::strlen(extension);
    if (lower.size() > n && lower.compare(lower.size() - n, n, extension) == 0) return true;
  }
  return false;
}

// Sorted names of the entries of `directory` that are (or are not) directories; hidden
// entries are left out.
std::vector<std::string> sorted_entries(const std::string& directory, bool directories) {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (entry.is_directory() == directories) names.push_back(name);
  }
  if (error) throw Error(directory + ": cannot list the folder: " + error.message());
  std::sort(names.begin(), names.end());
  return names;
}

std::string kind_of_image(std::int64_t channels) { return channels == 1 ? "grey (1 channel)" : "RGB (3 channels)"; }

std::string size_text(std::int64_t height, std::int64_t width) { return std::to_string(height) + "x" + std::to_string(width); }

// Decodes files[i] into images + i x sample bytes on `threads` threads; errors[i] holds
// the message of a file that failed. Progress is reported from the calling thread.
void decode_all(const FolderListing& listing, const ImageFolderFormat& format, std::uint8_t* images,
                std::vector<std::string>& errors, const std::string& directory, const DecodeProgress& progress) {
  const auto total = static_cast<std::int64_t>(listing.files.size());
  const std::int64_t sample_bytes = format.channels * format.height * format.width;
  std::atomic<std::int64_t> next{0}, done{0};
  auto work = [&](bool reports) {
    std::int64_t next_report = 4096;  // images done; the reporting thread's own
    for (std::int64_t i = next++; i < total; i = next++) {
      const std::string& path = listing.files[static_cast<std::size_t>(i)];
      try {
        DecodedImage image = decode_image_file(path);
        fit_image(image, format, path);
        std::copy(image.pixels.begin(), image.pixels.end(), images + i * sample_bytes);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
      const std::int64_t finished = ++done;
      if (reports && progress && finished >= next_report && finished < total) {
        progress(directory, finished, total);
        next_report = (finished / 4096 + 1) * 4096;
      }
    }
  };
  std::vector<std::thread> helpers;
  for (int t = 1; t < std::max(1, format.threads); ++t) helpers.emplace_back(work, false);
  work(true);
  for (std::thread& helper : helpers) helper.join();
  if (progress) progress(directory, total, total);
}

// Keeps the samples that decoded; records the others (or throws the first error).
std::vector<std::string> drop_bad_files(Dataset& dataset, const FolderListing& listing, const std::vector<std::string>& errors,
                                        bool skip_bad_files) {
  std::vector<std::string> skipped;
  const std::int64_t bytes = dataset.sample_bytes();
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < dataset.count; ++i) {
    if (!errors[static_cast<std::size_t>(i)].empty()) {
      if (!skip_bad_files) throw Error(errors[static_cast<std::size_t>(i)]);
      skipped.push_back(listing.files[static_cast<std::size_t>(i)]);
      continue;
    }
    if (kept != i) std::copy_n(dataset.images.begin() + i * bytes, bytes, dataset.images.begin() + kept * bytes);
    dataset.labels[static_cast<std::size_t>(kept++)] = dataset.labels[static_cast<std::size_t>(i)];
  }
  dataset.count = kept;
  dataset.images.resize(static_cast<std::size_t>(kept * bytes));
  dataset.labels.resize(static_cast<std::size_t>(kept));
  return skipped;
}

// --- the cache file: a header, the dataset, and a CRC-32 of everything before it ---

constexpr char cache_magic[8] = {'E', 'M', 'B', 'R', 'I', 'M', 'G', '1'};

struct ByteWriter {
  std::vector<std::uint8_t> bytes;
  void raw(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    bytes.insert(bytes.end(), p, p + n);
  }
  void u64(std::uint64_t v) { raw(&v, sizeof v); }
  void text(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
};

struct ByteReader {
  const std::vector<std::uint8_t>& bytes;
  std::size_t at = 0;
  bool raw(void* out, std::size_t n) {
    if (n > bytes.size() - at) return false;
    std::memcpy(out, bytes.data() + at, n);
    at += n;
    return true;
  }
  bool u64(std::uint64_t& v) { return raw(&v, sizeof v); }
  bool text(std::string& s) {
    std::uint64_t n = 0;
    if (!u64(n) || n > bytes.size() - at) return false;
    s.assign(reinterpret_cast<const char*>(bytes.data() + at), n);
    at += n;
    return true;
  }
};

std::uint64_t fnv1a(std::uint64_t hash, const void* data, std::size_t n) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * 0x100000001b3ULL;
  return hash;
}

// Changes with the file list, any file's size or modification time, and the format.
std::uint64_t cache_key(const FolderListing& listing, const ImageFolderFormat& format) {
  std::uint64_t key = 0xcbf29ce484222325ULL;
  const std::int64_t fields[] = {format.channels, format.height, format.width, format.resize, format.skip_bad_files};
  key = fnv1a(key, fields, sizeof fields);
  key = fnv1a(key, format.convert.data(), format.convert.size());
  for (const std::string& path : listing.files) {
    struct stat info {};
    ::stat(path.c_str(), &info);
    const std::int64_t stamp[] = {static_cast<std::int64_t>(info.st_size), static_cast<std::int64_t>(info.st_mtim.tv_sec),
                                  static_cast<std::int64_t>(info.st_mtim.tv_nsec)};
    key = fnv1a(key, path.data(), path.size() + 1);
    key = fnv1a(key, stamp, sizeof stamp);
  }
  return key;
}

std::vector<std::uint8_t> cache_bytes(const ImageFolderSet& set, std::uint64_t key) {
  ByteWriter out;
  out.raw(cache_magic, sizeof cache_magic);
  out.u64(key);
  const Dataset& d = set.dataset;
  for (std::int64_t v : {d.count, d.channels, d.height, d.width}) out.u64(static_cast<std::uint64_t>(v));
  out.u64(d.class_names.size());
  for (const std::string& name : d.class_names) out.text(name);
  out.u64(set.skipped.size());
  for (const std::string& name : set.skipped) out.text(name);
  out.raw(d.labels.data(), d.labels.size() * sizeof(std::int32_t));
  out.raw(d.images.data(), d.images.size());
  const auto crc = static_cast<std::uint32_t>(crc32(0L, out.bytes.data(), static_cast<uInt>(out.bytes.size())));
  out.raw(&crc, sizeof crc);
  return out.bytes;
}

bool read_strings(ByteReader& in, std::vector<std::string>& strings) {
  std::uint64_t n = 0;
  if (!in.u64(n) || n > in.bytes.size()) return false;
  strings.resize(n);
  for (std::string& s : strings) {
    if (!in.text(s)) return false;
  }
  return true;
}

// The cached set, or nothing when the file is missing, of another key, or damaged.
std::optional<ImageFolderSet> read_cache(const std::string& path, std::uint64_t key, const ImageFolderFormat& format) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof cache_magic + 4 || std::memcmp(bytes.data(), cache_magic, sizeof cache_magic) != 0) return std::nullopt;
  std::uint32_t stored_crc = 0;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - 4, 4);
  if (stored_crc != static_cast<std::uint32_t>(crc32(0L, bytes.data(), static_cast<uInt>(bytes.size() - 4)))) return std::nullopt;
  ByteReader in{bytes, sizeof cache_magic};
  std::uint64_t stored_key = 0, dims[4] = {};
  ImageFolderSet set;
  Dataset& d = set.dataset;
  if (!in.u64(stored_key) || stored_key != key) return std::nullopt;
  for (std::uint64_t& v : dims) {
    if (!in.u64(v) || v > bytes.size()) return std::nullopt;
  }
  d.count = static_cast<std::int64_t>(dims[0]);
  d.channels = static_cast<std::int64_t>(dims[1]);
  d.height = static_cast<std::int64_t>(dims[2]);
  d.width = static_cast<std::int64_t>(dims[3]);
  if (d.channels != format.channels || d.height != format.height || d.width != format.width) return std::nullopt;
  if (!read_strings(in, d.class_names) || !read_strings(in, set.skipped)) return std::nullopt;
  if (bytes.size() - 4 - in.at != static_cast<std::size_t>(d.count) * (sizeof(std::int32_t) + d.sample_bytes())) return std::nullopt;
  d.labels.resize(static_cast<std::size_t>(d.count));
  d.images.resize(static_cast<std::size_t>(d.count * d.sample_bytes()));
  in.raw(d.labels.data(), d.labels.size() * sizeof(std::int32_t));
  in.raw(d.images.data(), d.images.size());
  d.classes = static_cast<int>(d.class_names.size());
  for (std::int32_t label : d.labels) {
    if (label < 0 || label >= d.classes) return std::nullopt;
  }
  set.from_cache = true;
  return set;
}

// Temporary file, then rename: a reader never sees half a cache. A folder that cannot
// be written to is simply not cached.
void write_cache(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    if (!file) return;
    file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!file.flush()) {
      std::remove(temporary.c_str());
      return;
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) std::remove(temporary.c_str());
}

ImageFolderSet decode_folder(const std::string& directory, const FolderListing& listing, const ImageFolderFormat& format,
                             const DecodeProgress& progress) {
  ImageFolderSet set;
  Dataset& d = set.dataset;
  d.source = directory;
  d.count = static_cast<std::int64_t>(listing.files.size());
  d.channels = format.channels;
  d.height = format.height;
  d.width = format.width;
  d.class_names = listing.class_names;
  d.classes = static_cast<int>(listing.class_names.size());
  d.labels = listing.labels;
  d.images.resize(static_cast<std::size_t>(d.count * d.sample_bytes()));
  std::vector<std::string> errors(listing.files.size());
  decode_all(listing, format, d.images.data(), errors, directory, progress);
  set.skipped = drop_bad_files(d, listing, errors, format.skip_bad_files);
  if (d.count == 0) throw Error(directory + ": no image could be decoded (" + std::to_string(set.skipped.size()) + " skipped)");
  return set;
}

}  // namespace

void fit_image(DecodedImage& image, const ImageFolderFormat& format, const std::string& path) {
  if (image.channels != format.channels) {
    if (format.convert.empty()) {
      throw Error(path + ": the image is " + kind_of_image(image.channels) + " but the model takes " +
                  kind_of_image(format.channels) + "; pass --convert " + (format.channels == 3 ? "rgb" : "grey") +
                  " to convert");
    }
    image = convert_channels(image, format.channels);
  }
  if (image.height != format.height || image.width != format.width) {
    if (!format.resize) {
      throw Error(path + ": the image is " + size_text(image.height, image.width) + " (height x width) but the model takes " +
                  size_text(format.height, format.width) + "; pass --resize " + std::to_string(format.height) + "," +
                  std::to_string(format.width) + " to resize");
    }
    image.pixels = resize_bilinear(image.pixels, image.channels, image.height, image.width, format.height, format.width);
  }
}


FolderListing list_image_folder(const std::string& directory) {
  if (!fs::is_directory(directory)) throw Error(directory + ": no such folder");
  FolderListing listing;
  listing.class_names = sorted_entries(directory, true);
  if (listing.class_names.empty()) {
    throw Error(directory + ": no class folders; an image folder holds one sub-folder of PNG or JPEG images per class");
  }
  for (std::size_t c = 0; c < listing.class_names.size(); ++c) {
    const std::string folder = directory + "/" + listing.class_names[c];
    std::size_t images = 0;
    for (const std::string& name : sorted_entries(folder, false)) {
      if (!is_image_name(name)) continue;
      listing.files.push_back(folder + "/" + name);
      listing.labels.push_back(static_cast<std::int32_t>(c));
      ++images;
    }
    if (images == 0) throw Error(folder + ": the class folder holds no PNG or JPEG images (.png, .jpg, .jpeg)");
  }
  return listing;
}

std::string image_folder_cache_path(const std::string& directory, const FolderListing& listing, const ImageFolderFormat& format) {
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(cache_key(listing, format)));
  return directory + "/.ember-cache-" + key + ".bin";
}

ImageFolderSet load_image_folder(const std::string& directory, const ImageFolderFormat& format, const DecodeProgress& progress) {
  const FolderListing listing = list_image_folder(directory);
  const auto decoded_bytes = static_cast<std::size_t>(listing.files.size()) *
                             static_cast<std::size_t>(format.channels * format.height * format.width);
  const bool cached = format.cache || decoded_bytes > format.cache_limit;
  if (!cached) return decode_folder(directory, listing, format, progress);
  const std::uint64_t key = cache_key(listing, format);
  const std::string path = image_folder_cache_path(directory, listing, format);
  if (std::optional<ImageFolderSet> set = read_cache(path, key, format)) {
    set->dataset.source = directory;
    return std::move(*set);
  }
  ImageFolderSet set = decode_folder(directory, listing, format, progress);
  write_cache(path, cache_bytes(set, key));
  return set;
}

}  // namespace ember
