#include "engine/csv_table.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include "engine/error.h"

namespace ember {
namespace {

// The cells of one line; `quote_error` is set for an unterminated quote.
std::vector<std::string> split_line(const std::string& line, bool& quote_error) {
  std::vector<std::string> cells(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cells.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cells.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      cells.emplace_back();
    } else {
      cells.back() += c;
    }
  }
  quote_error = quoted;
  for (std::string& cell : cells) {  // surrounding spaces are not part of a value
    const std::size_t first = cell.find_first_not_of(" \t");
    cell = first == std::string::npos ? std::string() : cell.substr(first, cell.find_last_not_of(" \t") - first + 1);
  }
  return cells;
}

std::string where(const CsvText& csv, std::size_t row, const std::string& column) {
  return csv.source + ": row " + std::to_string(csv.lines[row]) + ", column \"" + column + "\"";
}

// A finite number, or an error naming the cell.
float number_of(const CsvText& csv, std::size_t row, std::size_t column) {
  const std::string& cell = csv.rows[row][column];
  if (cell.empty()) throw Error(where(csv, row, csv.header[column]) + ": missing value; expected a number");
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(cell.c_str(), &end);
  if (end != cell.c_str() + cell.size() || !std::isfinite(value) || errno == ERANGE) {
    throw Error(where(csv, row, csv.header[column]) + ": expected a finite number, found \"" + cell + "\"");
  }
  return static_cast<float>(value);
}

bool is_integer(const std::string& cell) {
  if (cell.empty() || cell.size() > 9) return false;
  return std::all_of(cell.begin(), cell.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The label columns: `names` separated by commas (several only for regression targets),
// or the last column.
std::vector<std::size_t> label_indices(const CsvText& csv, const std::string& names, bool regression) {
  if (names.empty()) return {csv.header.size() - 1};
  // A column whose own name holds a comma.
  if (const auto whole = std::find(csv.header.begin(), csv.header.end(), names); whole != csv.header.end()) {
    return {static_cast<std::size_t>(whole - csv.header.begin())};
  }
  std::vector<std::size_t> indices;
  std::size_t start = 0;
  while (start <= names.size()) {
    const std::size_t comma = std::min(names.find(',', start), names.size());
    const std::string name = names.substr(start, comma - start);
    start = comma + 1;
    const auto found = std::find(csv.header.begin(), csv.header.end(), name);
    if (found == csv.header.end()) {
      std::string columns;
      for (const std::string& c : csv.header) columns += (columns.empty() ? "" : ", ") + c;
      throw Error(csv.source + ": no column \"" + name + "\" for the labels; the columns are " + columns);
    }
    indices.push_back(static_cast<std::size_t>(found - csv.header.begin()));
  }
  if (indices.size() > 1 && !regression) {
    throw Error(csv.source + ": label columns \"" + names + "\": a classifier takes one label column; several are regression targets (a model trained with MSE)");
  }
  if (indices.size() >= csv.header.size()) throw Error(csv.source + ": label columns \"" + names + "\" leave no feature column");
  return indices;
}

// Class labels of the label column: by number, or by name (sorted unique names).
void read_classes(const CsvText& csv, std::size_t column, const LabelColumn& label, TableDataset& table) {
  bool numbered = true;
  if (label.training != nullptr) {
    numbered = label.training->class_names.empty();
    table.class_names = label.training->class_names;
  } else {
    for (const auto& row : csv.rows) numbered = numbered && is_integer(row[column]);
  }
  if (!numbered && label.training == nullptr) {
    for (const auto& row : csv.rows) table.class_names.push_back(row[column]);
    std::sort(table.class_names.begin(), table.class_names.end());
    table.class_names.erase(std::unique(table.class_names.begin(), table.class_names.end()), table.class_names.end());
  }
  std::map<std::string, std::int32_t> index;
  for (std::size_t i = 0; i < table.class_names.size(); ++i) index[table.class_names[i]] = static_cast<std::int32_t>(i);
  for (std::size_t r = 0; r < csv.rows.size(); ++r) {
    const std::string& cell = csv.rows[r][column];
    if (cell.empty()) throw Error(where(csv, r, csv.header[column]) + ": missing label");
    if (numbered) {
      if (!is_integer(cell)) throw Error(where(csv, r, csv.header[column]) + ": expected a class number (0, 1, ...), found \"" + cell + "\"");
      table.labels.push_back(std::stoi(cell));
    } else if (const auto found = index.find(cell); found != index.end()) {
      table.labels.push_back(found->second);
    } else {
      throw Error(where(csv, r, csv.header[column]) + ": the class \"" + cell + "\" is not among the training split's classes");
    }
  }
}

}  // namespace

CsvText parse_csv(const std::string& text, const std::string& source) {
  CsvText csv;
  csv.source = source;
  std::istringstream lines(text);
  std::string line;
  for (std::int64_t number = 1; std::getline(lines, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    bool quote_error = false;
    std::vector<std::string> cells = split_line(line, quote_error);
    if (quote_error) throw Error(source + ": row " + std::to_string(number) + ": a quoted cell is not closed");
    if (csv.header.empty()) {
      csv.header = std::move(cells);
      continue;
    }
    if (cells.size() != csv.header.size()) {
      const std::string column = csv.header[std::min(cells.size(), csv.header.size() - 1)];
      throw Error(source + ": row " + std::to_string(number) + " has " + std::to_string(cells.size()) + " cells but the header has " +
                  std::to_string(csv.header.size()) + (cells.size() < csv.header.size() ? " (column \"" + column + "\" is missing)" : ""));
    }
    csv.rows.push_back(std::move(cells));
    csv.lines.push_back(number);
  }
  if (csv.header.size() < 2) throw Error(source + ": expected a header row naming at least two columns (features and a label)");
  if (csv.rows.empty()) throw Error(source + ": no data rows after the header");
  return csv;
}

CsvText read_csv(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(path + ": cannot open the CSV file");
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return parse_csv(text, path);
}

TableDataset table_dataset(const CsvText& csv, const LabelColumn& label) {
  const std::vector<std::size_t> label_columns = label_indices(csv, label.name, label.regression);
  auto is_label = [&](std::size_t c) { return std::find(label_columns.begin(), label_columns.end(), c) != label_columns.end(); };
  TableDataset table;
  table.source = csv.source;
  table.count = static_cast<std::int64_t>(csv.rows.size());
  table.features = static_cast<std::int64_t>(csv.header.size() - label_columns.size());
  for (std::size_t c = 0; c < csv.header.size(); ++c) {
    if (!is_label(c)) table.feature_names.push_back(csv.header[c]);
  }
  table.inputs.reserve(static_cast<std::size_t>(table.count * table.features));
  for (std::size_t r = 0; r < csv.rows.size(); ++r) {
    for (std::size_t c = 0; c < csv.header.size(); ++c) {
      if (!is_label(c)) table.inputs.push_back(number_of(csv, r, c));
    }
  }
  if (label.regression) {
    table.target_count = static_cast<std::int64_t>(label_columns.size());
    for (std::size_t r = 0; r < csv.rows.size(); ++r) {
      for (std::size_t c : label_columns) table.targets.push_back(number_of(csv, r, c));
    }
  } else {
    read_classes(csv, label_columns[0], label, table);
  }
  return table;
}

TableDataset table_rows(const TableDataset& table, const std::vector<std::int64_t>& indices) {
  TableDataset out = table;
  out.count = static_cast<std::int64_t>(indices.size());
  out.inputs.clear();
  out.labels.clear();
  out.targets.clear();
  for (std::int64_t i : indices) {
    out.inputs.insert(out.inputs.end(), table.inputs.begin() + i * table.features, table.inputs.begin() + (i + 1) * table.features);
    if (!table.labels.empty()) out.labels.push_back(table.labels[static_cast<std::size_t>(i)]);
    const std::int64_t t = table.target_count;
    out.targets.insert(out.targets.end(), table.targets.begin() + i * t, table.targets.begin() + (i + 1) * t);
  }
  return out;
}

FeatureStatistics feature_statistics(const TableDataset& table) {
  FeatureStatistics s;
  s.mean.assign(static_cast<std::size_t>(table.features), 0.0);
  s.std.assign(static_cast<std::size_t>(table.features), 0.0);
  for (std::int64_t f = 0; f < table.features; ++f) {
    double sum = 0.0, squares = 0.0;
    for (std::int64_t r = 0; r < table.count; ++r) sum += table.inputs[static_cast<std::size_t>(r * table.features + f)];
    const double mean = sum / static_cast<double>(table.count);
    for (std::int64_t r = 0; r < table.count; ++r) {
      const double d = table.inputs[static_cast<std::size_t>(r * table.features + f)] - mean;
      squares += d * d;
    }
    const double std = std::sqrt(squares / static_cast<double>(table.count));
    s.mean[static_cast<std::size_t>(f)] = mean;
    s.std[static_cast<std::size_t>(f)] = std > 0.0 ? std : 1.0;
  }
  return s;
}

void standardize(TableDataset& table, const FeatureStatistics& statistics) {
  for (std::int64_t r = 0; r < table.count; ++r) {
    for (std::int64_t f = 0; f < table.features; ++f) {
      float& x = table.inputs[static_cast<std::size_t>(r * table.features + f)];
      x = static_cast<float>((x - statistics.mean[static_cast<std::size_t>(f)]) / statistics.std[static_cast<std::size_t>(f)]);
    }
  }
}

TableLoader::TableLoader(const TableDataset& table, std::int64_t batch_size, std::uint64_t seed, bool shuffle)
    : table_(table), batch_size_(batch_size), order_(table.count, seed, shuffle) {
  if (batch_size < 1) throw Error("batch size must be positive, found " + std::to_string(batch_size));
  if (table.count < 1) throw Error(table.source + ": the table is empty");
}

std::int64_t TableLoader::load(int epoch, std::int64_t batch, float* inputs, std::int32_t* labels, float* targets) {
  const std::vector<std::int64_t>& order = order_.of(epoch);
  const std::int64_t first = batch * batch_size_;
  const std::int64_t count = std::min(batch_size_, table_.count - first);
  const std::int64_t n = table_.features;
  for (std::int64_t i = 0; i < count; ++i) {
    const auto sample = static_cast<std::size_t>(order[static_cast<std::size_t>(first + i)]);
    std::copy_n(table_.inputs.begin() + static_cast<std::int64_t>(sample) * n, n, inputs + i * n);
    if (table_.regression()) {
      const std::int64_t t = table_.target_count;
      std::copy_n(table_.targets.begin() + static_cast<std::int64_t>(sample) * t, t, targets + i * t);
    } else {
      labels[i] = table_.labels[sample];
    }
  }
  return count;
}

}  // namespace ember
