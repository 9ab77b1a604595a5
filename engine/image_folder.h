#pragma once
// Image-folder datasets (torchvision's ImageFolder convention): one sub-folder per class,
// the class names the sorted folder names, PNG and JPEG files in each. The images are
// decoded once, on several threads, into a compact uint8 Dataset (engine/dataset.h), and
// large sets are cached beside the data so the next run skips the decoding.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/image_decode.h"

namespace ember {

// What every image becomes, and how.
struct ImageFolderFormat {
  std::int64_t channels = 1, height = 0, width = 0;
  std::string convert;  // "": an image with other channels is an error; "rgb" / "grey": converted
  bool resize = false;  // false: an image of another size is an error; true: resized (bilinear)
  bool skip_bad_files = false;
  int threads = 1;
  std::size_t cache_limit = std::size_t{256} << 20;  // cache sets that decode to more bytes
  bool cache = false;                               // cache whatever the size
};

// The decoded image in the format's channels and size (converted and resized where the
// format allows it), or an error naming `path`, the image's and the model's channels or
// size, and the flag that would fit it.
void fit_image(DecodedImage& image, const ImageFolderFormat& format, const std::string& path);

// Reports decoding progress: images done of all (on the calling thread).
using DecodeProgress = std::function<void(const std::string& directory, std::int64_t done, std::int64_t total)>;

struct ImageFolderSet {
  Dataset dataset;
  std::vector<std::string> skipped;  // corrupt files left out (skip_bad_files)
  bool from_cache = false;
};

// The class folders and image files of `directory`, in ImageFolder's order.
struct FolderListing {
  std::vector<std::string> class_names;
  std::vector<std::string> files;     // paths
  std::vector<std::int32_t> labels;   // per file
};
FolderListing list_image_folder(const std::string& directory);

// Decodes every image of `directory` into one Dataset, in file order whatever the thread
// count. Errors name the file (corrupt data, channels, size) or the folder (empty class).
ImageFolderSet load_image_folder(const std::string& directory, const ImageFolderFormat& format,
                                 const DecodeProgress& progress = {});

// The cache file of a listing and format: DIR/.ember-cache-<key>.bin.
std::string image_folder_cache_path(const std::string& directory, const FolderListing& listing,
                                    const ImageFolderFormat& format);

}  // namespace ember
