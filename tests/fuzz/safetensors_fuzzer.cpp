// The safetensors reader (engine/safetensors.h) on arbitrary bytes. What it accepts must
// keep its promise: every tensor's element count fits, its bytes lie inside the file's
// buffer, and floats() of an F32 tensor at its own shape succeeds.
#include <cstdint>

#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = ember::fuzz::write_input("input.safetensors", data, size);
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::SafetensorsFile file = ember::SafetensorsFile::read(path);
    for (const auto& [key, value] : file.metadata()) ember::fuzz::touch(value.data(), value.size());
    for (const auto& [name, tensor] : file.tensors()) {
      ember::fuzz::touch(tensor.data.data(), tensor.data.size());
      const std::int64_t elements = tensor.elements();
      if (tensor.dtype == "F32") {
        const std::span<const float> floats = file.floats(name, tensor.shape);
        if (static_cast<std::int64_t>(floats.size()) != elements) {
          ember::fuzz::finding("floats() of an accepted F32 tensor has another element count than its shape");
        }
      }
    }
  });
  return 0;
}
