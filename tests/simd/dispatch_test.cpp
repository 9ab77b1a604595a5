// EMBER_ISA (read once by simd/dispatch.cpp) really chooses the instruction set every
// kernel entry point uses: the forced-ISA runs of the layer and engine tests rely on it.
// Each check runs in a fresh child process, whose choice is not yet made.
#include "simd/dispatch.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace ember::simd {
namespace {

class EmberIsaVariable {
 public:
  EmberIsaVariable() {
    if (const char* value = std::getenv("EMBER_ISA")) saved_ = value;
  }
  ~EmberIsaVariable() {
    if (saved_) {
      ::setenv("EMBER_ISA", saved_->c_str(), 1);
    } else {
      ::unsetenv("EMBER_ISA");
    }
  }
  void set(std::string_view value) { ::setenv("EMBER_ISA", std::string(value).c_str(), 1); }

 private:
  std::optional<std::string> saved_;
};

TEST(Dispatch, EmberIsaChoosesTheInstructionSetOfEveryKernel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EmberIsaVariable variable;
  for (Isa isa : available_isas()) {
    variable.set(isa_name(isa));
    EXPECT_EXIT(std::_Exit(selected_isa() == isa ? 0 : 1), ::testing::ExitedWithCode(0), "")
        << "EMBER_ISA=" << isa_name(isa) << " did not make " << isa_name(isa) << " the dispatched set";
  }
}

TEST(Dispatch, WithoutEmberIsaTheBestSetOfTheCpuIsChosen) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EmberIsaVariable variable;
  ::unsetenv("EMBER_ISA");
  EXPECT_EXIT(std::_Exit(selected_isa() == available_isas().back() ? 0 : 1), ::testing::ExitedWithCode(0), "")
      << "expected " << isa_name(available_isas().back());
}

TEST(Dispatch, AnUnknownEmberIsaIsRefusedByName) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EmberIsaVariable variable;
  variable.set("avx9");
  EXPECT_EXIT(
      {
        try {
          (void)selected_isa();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(3);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(3), "EMBER_ISA=avx9 is not one of sse4_2, avx2, avx512");
}

}  // namespace
}  // namespace ember::simd
