// The CSV reader (engine/csv_table.h) on arbitrary text: parsed, then read as a
// classification table, as a regression table, and as a test split of the first.
#include <cstdint>
#include <string>

#include "engine/csv_table.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::CsvText csv = ember::parse_csv(text, "input.csv");
    for (const bool regression : {false, true}) {
      ember::fuzz::expect_only_ember_errors([&] {
        const ember::TableDataset table = ember::table_dataset(csv, ember::LabelColumn{"", regression, nullptr});
        if (static_cast<std::int64_t>(table.inputs.size()) != table.count * table.features) {
          ember::fuzz::finding("table_dataset: inputs disagree with count x features");
        }
        if (!regression) {
          const ember::TableDataset test = ember::table_dataset(csv, ember::LabelColumn{"", false, &table});
          if (test.labels != table.labels) ember::fuzz::finding("a table read as its own test split changed its labels");
        }
      });
    }
  });
  return 0;
}
