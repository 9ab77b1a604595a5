#include "engine/text.h"

#include <charconv>

namespace ember {

namespace {

template <class Number>
std::string shortest_text(Number value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof(text), value);
  return std::string(text, result.ptr);
}

}  // namespace

std::string format_number(float value) { return shortest_text(value); }
std::string format_number(double value) { return shortest_text(value); }

}  // namespace ember
