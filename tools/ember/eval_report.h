#pragma once
// What ember eval reports for a classifier beyond its accuracy: per-class accuracy and the
// confusion matrix (rows: the true class, columns: the predicted one), as text and as CSV.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "layers/layer.h"

namespace ember::cli {

class ClassReport {
 public:
  // Class names from the checkpoint's run settings ("class_names", an array of strings
  // with one per class), else the indices "0", "1", ...
  ClassReport(std::int64_t classes, const Json& run);

  // A batch: `count` rows of `classes` logits and their labels (each in [0, classes)).
  void add(std::span<const float> logits, std::span<const std::int32_t> labels, std::int64_t count);

  std::int64_t classes() const { return classes_; }
  std::int64_t count(std::int64_t actual, std::int64_t predicted) const;
  std::int64_t samples_of(std::int64_t actual) const;  // rows with this label
  // Per-class accuracy (recall) lines and the matrix, aligned for a terminal.
  std::string text() const;
  // CSV: "class,samples,correct,accuracy," then one column per predicted class; one row
  // per true class. Written to a temporary beside `path` and renamed over it.
  void write_csv(const std::string& path) const;

 private:
  std::int64_t classes_;
  std::vector<std::string> names_;
  std::vector<std::int64_t> confusion_;  // classes x classes, row = actual
};

}  // namespace ember::cli
