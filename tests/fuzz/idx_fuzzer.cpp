// The IDX reader (engine/idx.h) on arbitrary bytes, plain or gzipped, as images (rank 3)
// and as labels (rank 1).
#include <cstdint>

#include "engine/idx.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = ember::fuzz::write_input("input.idx", data, size);
  for (const int rank : {3, 1}) {
    ember::fuzz::expect_only_ember_errors([&] {
      const ember::IdxArray array = ember::read_idx(path, rank);
      std::int64_t elements = 1;
      for (const std::int64_t d : array.dims) elements *= d;
      if (static_cast<int>(array.dims.size()) != rank || elements != static_cast<std::int64_t>(array.data.size())) {
        ember::fuzz::finding("read_idx accepted a file whose dims disagree with its rank or data");
      }
      ember::fuzz::touch(array.data.data(), array.data.size());
    });
  }
  return 0;
}
