#pragma once
// The fuzz targets that build and run a model (from a fuzzed spec or ONNX file) run only
// small ones: a fuzzer looks for crashes, and a huge valid model is only slow.
#include <cstdint>

#include "engine/graph.h"
#include "engine/parameters.h"

namespace ember::fuzz {

constexpr std::int64_t max_value_elements = std::int64_t{1} << 16;
constexpr std::int64_t max_parameter_floats = std::int64_t{1} << 18;

inline bool small(const Graph& graph, const ParameterStore& parameters) {
  if (parameters.total_floats() > max_parameter_floats) return false;
  std::int64_t elements = 0;
  for (ValueId v = 0; v < graph.value_count(); ++v) {
    const std::int64_t value = graph.value_shape(v).elements();
    if (value > max_value_elements - elements) return false;
    elements += value;
  }
  return true;
}

}  // namespace ember::fuzz
