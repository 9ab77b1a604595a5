#pragma once
// Checking a layer's options, with messages that name the layer kind, the option, what
// was expected and what was found. LayerOptions reads them from the spec's JSON object
// and refuses unknown ones (a typo must not silently become a default); a layer's
// constructor, which C++ callers reach without JSON, checks its arguments with
// throw_option_error so it says the same thing.
#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "layers/layer.h"

namespace ember {

// Throws ember::Error "<kind> option '<name>': expected <expected>, found <found>".
[[noreturn]] void throw_option_error(std::string_view kind, std::string_view name, std::string_view expected, const Json& found);

class LayerOptions {
 public:
  // Refuses any key not in `known`.
  LayerOptions(std::string_view kind, const Json& options, std::initializer_list<std::string_view> known);
  // For a layer that takes no options: refuses any.
  static void require_none(std::string_view kind, const Json& options);

  std::int64_t positive_integer(std::string_view name) const;
  std::int64_t positive_integer(std::string_view name, std::int64_t default_value) const;
  std::int64_t non_negative_integer(std::string_view name, std::int64_t default_value) const;
  // An integer or [h, w] pair.
  std::array<std::int64_t, 2> pair(std::string_view name, std::int64_t minimum) const;
  std::array<std::int64_t, 2> pair(std::string_view name, std::int64_t minimum, std::array<std::int64_t, 2> default_value) const;
  bool boolean(std::string_view name, bool default_value) const;
  double number(std::string_view name, double default_value, double low, double high) const;
  // A number in [low, high] (both included), or null (nullopt).
  std::optional<double> number_or_null(std::string_view name, double default_value, double low, double high) const;
  // One of `choices` (strings); `default_value` if absent.
  std::string choice(std::string_view name, std::initializer_list<std::string_view> choices, std::string_view default_value) const;

 private:
  [[noreturn]] void fail(std::string_view name, std::string_view expected) const;
  std::string kind_;
  const Json& options_;
};

// [h, w] as JSON: a plain integer when both are equal (as written by hand).
Json pair_json(const std::array<std::int64_t, 2>& value);

}  // namespace ember
