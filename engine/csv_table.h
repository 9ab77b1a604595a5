#pragma once
// Tabular datasets from CSV files: a header row naming the columns, numeric feature
// columns, and one label column holding class names or class numbers, or (for a model
// trained with MSE) one or more regression target columns. Every problem names the file, the row (its
// 1-based line) and the column.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/epoch_order.h"

namespace ember {

// The cells of a CSV file as text. Cells are separated by commas; a cell may be quoted
// ("a, b") with "" for a quote inside. Blank lines are skipped.
struct CsvText {
  std::string source;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<std::int64_t> lines;  // the 1-based line of each row
};
CsvText parse_csv(const std::string& text, const std::string& source);
CsvText read_csv(const std::string& path);

struct TableDataset {
  std::string source;
  std::int64_t count = 0, features = 0;
  std::vector<std::string> feature_names;
  std::vector<float> inputs;          // count x features
  std::vector<std::int32_t> labels;   // classification: count
  std::int64_t target_count = 0;      // regression: target columns
  std::vector<float> targets;         // regression: count x target_count
  std::vector<std::string> class_names;  // classification by name; empty for class numbers
  bool regression() const { return labels.empty(); }
};

// How the label column is read.
struct LabelColumn {
  // Empty: the last column. Regression may name several target columns: "y1,y2".
  std::string name;
  bool regression = false;  // float targets
  // Classification: the training split, for a test split's file: its labels must be
  // among the training split's class names, or class numbers as the training split's
  // were. Null: class numbers when every label is an integer, else the sorted unique names.
  const struct TableDataset* training = nullptr;
};
TableDataset table_dataset(const CsvText& csv, const LabelColumn& label);

// The rows of `table` at `indices` (a split).
TableDataset table_rows(const TableDataset& table, const std::vector<std::int64_t>& indices);

// Per-feature mean and (population) standard deviation of `table`; a constant feature
// gets std 1. standardize() maps x to (x - mean) / std.
struct FeatureStatistics {
  std::vector<double> mean, std;
};
FeatureStatistics feature_statistics(const TableDataset& table);
void standardize(TableDataset& table, const FeatureStatistics& statistics);

// Batches of a table in a per-epoch order (engine/epoch_order.h).
class TableLoader {
 public:
  TableLoader(const TableDataset& table, std::int64_t batch_size, std::uint64_t seed, bool shuffle);
  std::int64_t batches_per_epoch() const { return (table_.count + batch_size_ - 1) / batch_size_; }
  // Fills inputs (batch x features) and labels or targets; returns the batch's size.
  std::int64_t load(int epoch, std::int64_t batch, float* inputs, std::int32_t* labels, float* targets);

 private:
  const TableDataset& table_;
  std::int64_t batch_size_;
  EpochOrder order_;
};

}  // namespace ember
