// CSV tables (engine/csv_table.h): parsing, labels by name or number, regression
// targets, splits and standardization. Every bad cell names the file, row and column.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/csv_table.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

using testing::error_of;

TableDataset classes_of(const std::string& text, const std::string& label = "") {
  return table_dataset(parse_csv(text, "t.csv"), LabelColumn{label, false, nullptr});
}

TEST(CsvTable, FeaturesAndNamedClasses) {
  const TableDataset t = classes_of("x,y,kind\n1,2,setosa\n3,4.5,virginica\n\n-1,0,setosa\r\n");
  EXPECT_EQ(t.count, 3);
  EXPECT_EQ(t.features, 2);
  EXPECT_EQ(t.feature_names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(t.inputs, (std::vector<float>{1, 2, 3, 4.5f, -1, 0}));
  EXPECT_EQ(t.class_names, (std::vector<std::string>{"setosa", "virginica"}));
  EXPECT_EQ(t.labels, (std::vector<std::int32_t>{0, 1, 0}));
}

TEST(CsvTable, IntegerLabelsAreClassNumbersAndAnyColumnCanBeTheLabel) {
  const TableDataset t = classes_of("label,a,b\n2,1,1\n0,2,2\n", "label");
  EXPECT_TRUE(t.class_names.empty());
  EXPECT_EQ(t.labels, (std::vector<std::int32_t>{2, 0}));
  EXPECT_EQ(t.inputs, (std::vector<float>{1, 1, 2, 2}));
  const TableDataset quoted = classes_of("a,\"the, label\"\n\"1.5\",\"x \"\"y\"\"\"\n", "the, label");
  EXPECT_EQ(quoted.class_names, std::vector<std::string>{"x \"y\""});
}

TEST(CsvTable, RegressionTargets) {
  const TableDataset t = table_dataset(parse_csv("a,b,y\n1,2,0.5\n3,4,-2\n", "t.csv"), LabelColumn{"", true, nullptr});
  EXPECT_TRUE(t.regression());
  EXPECT_EQ(t.targets, (std::vector<float>{0.5f, -2.0f}));
  EXPECT_EQ(error_of([] { table_dataset(parse_csv("a,y\n1,2\n3,big\n", "t.csv"), LabelColumn{"", true, nullptr}); }),
            "t.csv: row 3, column \"y\": expected a finite number, found \"big\"");
}

TEST(CsvTable, SeveralRegressionTargetColumns) {
  const CsvText csv = parse_csv("a,y1,b,y2\n1,10,2,20\n3,30,4,40\n5,50,6,60\n", "t.csv");
  const TableDataset t = table_dataset(csv, LabelColumn{"y2,y1", true, nullptr});
  EXPECT_EQ(t.target_count, 2);
  EXPECT_EQ(t.feature_names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(t.inputs, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(t.targets, (std::vector<float>{20, 10, 40, 30, 60, 50}));
  EXPECT_EQ(table_rows(t, {2, 0}).targets, (std::vector<float>{60, 50, 20, 10}));
  TableLoader loader(t, 3, 1, false);
  std::vector<float> x(6), y(6);
  loader.load(0, 0, x.data(), nullptr, y.data());
  EXPECT_EQ(y, t.targets);
  EXPECT_EQ(error_of([&] { table_dataset(csv, LabelColumn{"y1,y2", false, nullptr}); }),
            "t.csv: label columns \"y1,y2\": a classifier takes one label column; several are regression targets (a model trained with MSE)");
  EXPECT_EQ(error_of([&] { table_dataset(csv, LabelColumn{"y1,z", true, nullptr}); }),
            "t.csv: no column \"z\" for the labels; the columns are a, y1, b, y2");
}

TEST(CsvTable, BadCellsAreNamedByFileRowAndColumn) {
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,2,x\n1,oops,y\n"); }), "t.csv: row 3, column \"b\": expected a finite number, found \"oops\"");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,,x\n"); }), "t.csv: row 2, column \"b\": missing value; expected a number");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,2\n"); }), "t.csv: row 2 has 2 cells but the header has 3 (column \"c\" is missing)");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,2,3,4\n"); }), "t.csv: row 2 has 4 cells but the header has 3");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,2,\n"); }), "t.csv: row 2, column \"c\": missing label");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n1,2,x\n", "kind"); }), "t.csv: no column \"kind\" for the labels; the columns are a, b, c");
  EXPECT_EQ(error_of([] { classes_of("a,b,c\n\"1,2,x\n"); }), "t.csv: row 2: a quoted cell is not closed");
  EXPECT_EQ(error_of([] { classes_of("a,b\n"); }), "t.csv: no data rows after the header");
  EXPECT_EQ(error_of([] { read_csv("/no/such.csv"); }), "/no/such.csv: cannot open the CSV file");
}

TEST(CsvTable, TestSplitLabelsFollowTheTrainingSplit) {
  const TableDataset train = classes_of("a,c\n1,cat\n2,dog\n");
  const TableDataset test = table_dataset(parse_csv("a,c\n1,dog\n", "test.csv"), LabelColumn{"", false, &train});
  EXPECT_EQ(test.labels, std::vector<std::int32_t>{1});
  EXPECT_EQ(error_of([&] { table_dataset(parse_csv("a,c\n1,cow\n", "test.csv"), LabelColumn{"", false, &train}); }),
            "test.csv: row 2, column \"c\": the class \"cow\" is not among the training split's classes");
  const TableDataset numbered = classes_of("a,c\n1,0\n2,1\n");
  EXPECT_EQ(error_of([&] { table_dataset(parse_csv("a,c\n1,dog\n", "test.csv"), LabelColumn{"", false, &numbered}); }),
            "test.csv: row 2, column \"c\": expected a class number (0, 1, ...), found \"dog\"");
}

TEST(CsvTable, StandardizeUsesTheGivenStatistics) {
  TableDataset t = classes_of("a,b,c\n1,5,x\n3,5,y\n");
  const FeatureStatistics s = feature_statistics(t);
  EXPECT_EQ(s.mean, (std::vector<double>{2.0, 5.0}));
  EXPECT_EQ(s.std, (std::vector<double>{1.0, 1.0}));  // b is constant: 1
  TableDataset other = classes_of("a,b,c\n4,7,x\n");
  standardize(other, s);
  EXPECT_EQ(other.inputs, (std::vector<float>{2.0f, 2.0f}));
}

TEST(CsvTable, RowsAndLoaderKeepLabelsWithTheirFeatures) {
  const TableDataset t = classes_of("a,c\n0,x\n1,y\n2,x\n3,y\n");
  const TableDataset odd = table_rows(t, {1, 3});
  EXPECT_EQ(odd.inputs, (std::vector<float>{1, 3}));
  EXPECT_EQ(odd.labels, (std::vector<std::int32_t>{1, 1}));
  TableLoader loader(t, 3, 5, true);
  std::vector<float> x(3);
  std::vector<std::int32_t> labels(3);
  for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
    const std::int64_t n = loader.load(1, b, x.data(), labels.data(), nullptr);
    for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(labels[i], static_cast<int>(x[i]) % 2);
  }
}

}  // namespace
}  // namespace ember
