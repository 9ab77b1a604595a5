#pragma once
// For the runs of a test binary under EMBER_ISA=<set> (tests/CMakeLists.txt registers the
// layer and end-to-end engine tests once per lower instruction set): before any test, the
// dispatcher must have chosen exactly that set, or every test of the run would silently
// check the CPU's best set again. A set this CPU lacks skips the whole run, with a message.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "simd/dispatch.h"

namespace ember::testing {

class ForcedIsaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* forced = std::getenv("EMBER_ISA");
    if (forced == nullptr || *forced == '\0') return;
    for (simd::Isa isa : {simd::Isa::sse4_2, simd::Isa::avx2, simd::Isa::avx512}) {
      if (simd::isa_name(isa) != forced) continue;
      if (!simd::isa_supported_by_cpu(isa)) {
        GTEST_SKIP() << "every test skipped: EMBER_ISA=" << forced << " but this CPU does not support " << forced;
      }
      ASSERT_EQ(simd::isa_name(simd::selected_isa()), std::string_view(forced))
          << "EMBER_ISA is set, but the dispatcher chose another instruction set";
      std::printf("kernels forced to %s by EMBER_ISA\n", forced);
      return;
    }
    FAIL() << "EMBER_ISA=" << forced << " names none of sse4_2, avx2, avx512";
  }
};

inline ::testing::Environment* const forced_isa_environment = ::testing::AddGlobalTestEnvironment(new ForcedIsaEnvironment);

}  // namespace ember::testing
