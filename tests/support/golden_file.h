#pragma once
// A PyTorch golden file written by tests/pytorch/make_goldens.py: the input batch, the
// parameters ("param.<ember name>"), and what PyTorch computed from them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "engine/parameters.h"
#include "engine/safetensors.h"

namespace ember::testing {

class GoldenFile {
 public:
  explicit GoldenFile(const std::string& name)
      : file(SafetensorsFile::read(std::string(EMBER_TEST_DATA_DIR) + "/" + name)) {
    const auto x = tensor("input");
    input.assign(x.begin(), x.end());
  }

  std::span<const float> tensor(const std::string& name) const {
    const SafetensorsTensor& t = file.tensor(name);
    EXPECT_EQ(t.dtype, "F32") << name;
    return {reinterpret_cast<const float*>(t.data.data()), static_cast<std::size_t>(t.elements())};
  }

  // An I64 tensor (class labels) as int32.
  std::vector<std::int32_t> int_tensor(const std::string& name) const {
    const SafetensorsTensor& t = file.tensor(name);
    EXPECT_EQ(t.dtype, "I64") << name;
    std::vector<std::int32_t> values;
    for (std::int64_t i = 0; i < t.elements(); ++i) {
      std::int64_t value = 0;
      std::memcpy(&value, t.data.data() + i * 8, 8);
      values.push_back(static_cast<std::int32_t>(value));
    }
    return values;
  }

  void load_parameters(ParameterStore& parameters) const {
    for (const ParameterEntry& e : parameters.entries()) {
      const auto values = tensor("param." + e.name);
      ASSERT_EQ(static_cast<std::int64_t>(values.size()), e.spec.shape.elements()) << e.name;
      std::copy(values.begin(), values.end(), parameters.values().begin() + e.offset);
    }
  }

  SafetensorsFile file;
  std::vector<float> input;
};

// max |ours - theirs| / max |theirs| over the tensor.
inline double relative_error(std::span<const float> ours, std::span<const float> theirs) {
  EXPECT_EQ(ours.size(), theirs.size());
  double max_difference = 0.0, max_reference = 0.0;
  for (std::size_t i = 0; i < std::min(ours.size(), theirs.size()); ++i) {
    max_difference = std::max(max_difference, std::fabs(static_cast<double>(ours[i]) - theirs[i]));
    max_reference = std::max(max_reference, std::fabs(static_cast<double>(theirs[i])));
  }
  return max_difference / std::max(max_reference, 1e-30);
}

// Every parameter's gradient against the golden's "grad.<name>", within `tolerance`.
inline void expect_gradients_match(const ParameterStore& parameters, const GoldenFile& golden, double tolerance) {
  for (const ParameterEntry& e : parameters.entries()) {
    const auto ours = parameters.gradients().subspan(static_cast<std::size_t>(e.offset), static_cast<std::size_t>(e.spec.shape.elements()));
    const double error = relative_error(ours, golden.tensor("grad." + e.name));
    std::printf("grad %-32s max relative error %.3g\n", e.name.c_str(), error);
    EXPECT_LE(error, tolerance) << e.name;
  }
}

}  // namespace ember::testing
