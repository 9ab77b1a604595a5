#pragma once
// The GEMM shapes ember benchmarks (bench/gemm_bench.cpp) and whose tile efficiency
// tests/simd/gemm_plan_test.cpp checks for every instruction set: Y (M x N) = X (M x K)
// W^T, the Linear forward layout.
#include <cstdint>

namespace ember::bench {

struct GemmShape {
  const char* name;
  std::int64_t M, K, N;
};

// Generic sizes, then the built-in models' Linear layers: seed CNN fc1/fc2 at batch 1, 16
// and 64; attn-cnn d64 blocks at batch 16 x 49 tokens, and one image (49 tokens).
inline constexpr GemmShape gemm_shapes[] = {
    {"64x8192x128", 64, 8192, 128},       {"256x1024x1024", 256, 1024, 1024}, {"1024x256x768", 1024, 256, 768},
    {"2048x2048x2048", 2048, 2048, 2048}, {"fc1_b1", 1, 6272, 128},           {"fc1_b16", 16, 6272, 128},
    {"fc1_b64", 64, 6272, 128},           {"fc2_b1", 1, 128, 10},             {"fc2_b16", 16, 128, 10},
    {"fc2_b64", 64, 128, 10},             {"attn_qkv", 784, 64, 192},         {"attn_out", 784, 64, 64},
    {"attn_ff1", 784, 64, 128},           {"attn_ff2", 784, 128, 64},         {"attn_qkv_t49", 49, 64, 192},
    {"attn_ff2_t49", 49, 128, 64},
};

}  // namespace ember::bench
