#pragma once
// How `ember train --data` reads a dataset of the user's own (engine/data_source.h):
// an image folder (engine/image_folder.h) or a CSV table (engine/csv_table.h).
#include <cstddef>
#include <cstdint>
#include <string>

namespace ember {

struct DataOptions {
  // Fraction of the data held out as the test split when there is none (no DIR/test or
  // DIR/val folder, no test_data file); chosen from the run's seed.
  double val_split = 0.0;
  std::string test_data;  // a CSV file for the test split
  // Image folders.
  std::string convert;  // "" (channels must match the model), "rgb" or "grey"
  std::int64_t resize_height = 0, resize_width = 0;  // 0: images must have the model's size
  bool skip_bad_files = false;                       // skip (and list) corrupt images instead of failing
  // Decoded images are cached beside the data (DIR/.ember-cache-<key>.bin) when they take
  // more than this many bytes, or always with `cache`.
  std::size_t cache_limit = std::size_t{256} << 20;
  bool cache = false;
  std::string augment;  // training split only: engine/augment.h
  // CSV tables.
  std::string label_column;  // default: the last column
  bool standardize = false;  // per-feature mean/std of the training split, kept in the checkpoint
};

}  // namespace ember
