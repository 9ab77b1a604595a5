#pragma once
// Small text helpers for messages: numbers as their shortest exact text, and lists
// joined with a separator ("a, b, c").
#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

namespace ember {

// Shortest text that reads back as the same value ("0.1", not "0.100000"). The float
// and double overloads differ on purpose: 0.1f prints "0.1" as a float but
// "0.10000000149011612" once widened to double.
std::string format_number(float value);
std::string format_number(double value);

// Bytes in MiB (2^20 bytes), for reports.
inline double mebibytes(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// The items of `items` in order with `separator` between them; integers are written in
// decimal, anything else must convert to std::string_view.
template <class Range>
std::string join(const Range& items, std::string_view separator = ", ") {
  std::string text;
  bool first = true;
  for (const auto& item : items) {
    if (!first) text += separator;
    first = false;
    if constexpr (std::integral<std::remove_cvref_t<decltype(item)>>) {
      text += std::to_string(item);
    } else {
      text += std::string_view(item);
    }
  }
  return text;
}

}  // namespace ember
