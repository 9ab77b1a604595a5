#pragma once
// Deterministic random numbers that do not depend on the standard library's
// implementation-defined distributions, so a seed gives the same numbers everywhere.
//
// CounterRandom is stateless: the value at (key, counter) is a hash, so threads can draw
// the numbers of any sample without sharing a generator (dropout masks stay the same
// whatever the thread count). Random is a sequential generator for initialization and
// shuffling.
#include <cmath>
#include <cstdint>

namespace ember {

// splitmix64's finalizer: a bijective 64-bit mix with good avalanche.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A float in [0, 1) from the top 24 bits.
constexpr float unit_float(std::uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

class CounterRandom {
 public:
  constexpr explicit CounterRandom(std::uint64_t key = 0) : key_(mix64(key)) {}
  constexpr std::uint64_t bits(std::uint64_t counter) const { return mix64(key_ ^ mix64(counter)); }
  constexpr float uniform(std::uint64_t counter) const { return unit_float(bits(counter)); }
  // A key for a sub-stream (per step, per layer, ...).
  constexpr CounterRandom derive(std::uint64_t salt) const { return CounterRandom(key_ ^ mix64(salt + 0x632be59bd9b4e019ULL)); }

 private:
  std::uint64_t key_;
};

class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(mix64(seed)) {}
  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix64(state_);
  }
  float uniform() { return unit_float(next()); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Unbiased integer in [0, n) (Lemire's multiply-shift with rejection).
  std::uint64_t below(std::uint64_t n) {
    while (true) {
      const unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
      const auto low = static_cast<std::uint64_t>(m);
      if (low >= n || low >= (0 - n) % n) return static_cast<std::uint64_t>(m >> 64);
    }
  }
  // Standard normal (Box-Muller).
  float normal() {
    const double u1 = (static_cast<double>(next() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    const double u2 = static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  std::uint64_t state_;
};

}  // namespace ember
