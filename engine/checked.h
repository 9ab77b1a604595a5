#pragma once
// Arithmetic on sizes that come from files and flags. A spec, a checkpoint or a flag can
// hold any integer, so every size computed from one is checked: an overflow is an
// ember::Error naming the field, never wrap-around (a buffer too small) or signed overflow
// (undefined behaviour).
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "engine/error.h"

namespace ember {

[[noreturn]] inline void throw_overflow(std::string_view what, std::string_view operation, const std::string& a,
                                        const std::string& b) {
  throw Error(std::string(what) + ": " + a + " " + std::string(operation) + " " + b + " overflows");
}

template <std::integral T>
T checked_multiply(T a, T b, std::string_view what) {
  T result;
  if (__builtin_mul_overflow(a, b, &result)) throw_overflow(what, "x", std::to_string(a), std::to_string(b));
  return result;
}

template <std::integral T>
T checked_add(T a, T b, std::string_view what) {
  T result;
  if (__builtin_add_overflow(a, b, &result)) throw_overflow(what, "+", std::to_string(a), std::to_string(b));
  return result;
}

template <std::integral T>
T checked_subtract(T a, T b, std::string_view what) {
  T result;
  if (__builtin_sub_overflow(a, b, &result)) throw_overflow(what, "-", std::to_string(a), std::to_string(b));
  return result;
}

// A count (>= 0) as a size_t.
inline std::size_t checked_size(std::int64_t count, std::string_view what) {
  if (count < 0) throw Error(std::string(what) + ": expected a size >= 0, found " + std::to_string(count));
  return static_cast<std::size_t>(count);
}

// The bytes of `count` floats.
inline std::size_t checked_float_bytes(std::int64_t count, std::string_view what) {
  return checked_multiply(checked_size(count, what), sizeof(float), what);
}

// `bytes` rounded up to a multiple of `alignment`, checked.
inline std::size_t checked_align_up(std::size_t bytes, std::size_t alignment, std::string_view what) {
  return checked_add(bytes, alignment - 1, what) / alignment * alignment;
}

}  // namespace ember
