#pragma once
// Shared pieces of the tests/simd suites: the instruction-set parameter, guarded buffers
// that turn a read or write past the end into a crash, random fills and ulp arithmetic.
// Scalar reference kernels live in each test file, next to the checks that use them.
#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/random.h"
#include "simd/arch.h"
#include "simd/dispatch.h"

namespace ember::simd {

// GoogleTest prints parameters in failure messages with PrintTo.
inline void PrintTo(Isa isa, std::ostream* os) { *os << isa_name(isa); }

}  // namespace ember::simd

namespace ember::simd::testing {

// Every instruction set this CPU runs; test names end in /sse4_2, /avx2, /avx512.
inline auto all_available_isas() {
  const std::span<const Isa> isas = available_isas();
  return ::testing::ValuesIn(isas.begin(), isas.end());
}

struct IsaName {
  std::string operator()(const ::testing::TestParamInfo<Isa>& info) const { return std::string(isa_name(info.param)); }
};

// The kernel table of `isa`, from the maker compiled for that instruction set alone.
//
// The kernel tests take their tables from here rather than from <family>_kernels_for:
// that function builds the tables of *every* instruction set on first use, running the
// AVX-512 maker (compiled with AVX-512 flags) even on a CPU without AVX-512, which can
// fault with SIGILL and end the whole test binary. Each suite checks, in a child process
// (a death test), that <family>_kernels_for(isa) returns this same table.
template <class Kernels, Kernels (*make_sse4_2)(), Kernels (*make_avx2)(), Kernels (*make_avx512)()>
Kernels made_for(Isa isa) {
  switch (isa) {
    case Isa::sse4_2: return make_sse4_2();
    case Isa::avx2: return make_avx2();
    case Isa::avx512: return make_avx512();
  }
  throw std::invalid_argument("unknown Isa " + std::to_string(static_cast<int>(isa)));
}

// Runs `check` (which returns true when <family>_kernels_for(isa) gave the expected
// table) in a child process, so that a fault while building the tables is reported as a
// failure of this one test.
template <class Check>
void expect_kernels_for_is_safe(Isa isa, const char* family, Check check) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(check() ? 0 : 1), ::testing::ExitedWithCode(0), "")
      << family << "_kernels_for(" << isa_name(isa) << ") must return the " << isa_name(isa)
      << " table without faulting on this CPU (exit code 1: wrong table; a signal: the table build faulted, e.g. SIGILL "
         "(4) from running the maker of an instruction set the CPU lacks)";
}

// Unit roundoff of float: half an ulp of 1.
inline constexpr double float_unit_roundoff = 0x1p-24;

// n elements of T whose last element ends exactly where a PROT_NONE page begins, so a
// kernel that reads or writes even one element past n faults at once. n == 0 gives a
// pointer to the guard page itself: any access at all faults.
template <class T>
class GuardedBuffer {
 public:
  explicit GuardedBuffer(std::size_t n) : n_(n) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t bytes = n * sizeof(T);
    data_pages_ = (bytes + page - 1) / page * page;
    mapped_bytes_ = data_pages_ + page;
    void* base = mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<std::byte*>(base);
    if (mprotect(base_ + data_pages_, page, PROT_NONE) != 0) {
      munmap(base_, mapped_bytes_);
      throw std::bad_alloc();
    }
    data_ = reinterpret_cast<T*>(base_ + data_pages_ - bytes);
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  ~GuardedBuffer() { munmap(base_, mapped_bytes_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return n_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + n_; }

  void assign(const std::vector<T>& values) {
    for (std::size_t i = 0; i < n_; ++i) data_[i] = values[i];
  }
  std::vector<T> to_vector() const { return std::vector<T>(data_, data_ + n_); }

 private:
  std::size_t n_;
  std::size_t data_pages_ = 0;
  std::size_t mapped_bytes_ = 0;
  std::byte* base_ = nullptr;
  T* data_ = nullptr;
};

inline std::vector<float> uniform_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Random random(seed);
  std::vector<float> v(n);
  for (float& x : v) x = random.uniform(lo, hi);
  return v;
}

inline std::vector<float> normal_vector(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  Random random(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * random.normal();
  return v;
}

// Floats mapped to integers that order like the floats, so that the difference of two
// keys is the number of floats between them (+0 and -0 share a key).
inline std::int64_t ordered_key(float x) {
  const auto bits = static_cast<std::int64_t>(std::bit_cast<std::int32_t>(x));
  return bits >= 0 ? bits : -(bits & 0x7fffffff);
}

// How many representable floats lie between a and b (0 when equal).
inline std::int64_t ulp_distance(float a, float b) {
  const std::int64_t d = ordered_key(a) - ordered_key(b);
  return d >= 0 ? d : -d;
}

// Bitwise equality: distinguishes -0 from +0 and compares NaN payloads.
inline bool same_bits(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

// The tail lengths every span kernel is checked at: empty, below, at and above one and
// two vector widths of SSE (4), AVX2 (8) and AVX-512 (16), and a large one.
inline const std::vector<std::int64_t>& tail_lengths() {
  static const std::vector<std::int64_t> lengths = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 1000};
  return lengths;
}

}  // namespace ember::simd::testing
