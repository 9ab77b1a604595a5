#include "layers/options.h"

#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/text.h"

namespace ember {

LayerOptions::LayerOptions(std::string_view kind, const Json& options, std::initializer_list<std::string_view> known)
    : kind_(kind), options_(options) {
  if (!options_.is_object()) throw Error(kind_ + ": options must be a JSON object, found " + options_.dump());
  for (const auto& [key, value] : options_.items()) {
    bool found = false;
    for (std::string_view k : known) found = found || k == key;
    if (!found) {
      const std::string list = join(known);
      throw Error(kind_ + ": unknown option '" + key + "'" + (list.empty() ? " (it takes none)" : " (known: " + list + ")"));
    }
  }
}

void throw_option_error(std::string_view kind, std::string_view name, std::string_view expected, const Json& found) {
  throw Error(std::string(kind) + " option '" + std::string(name) + "': expected " + std::string(expected) + ", found " +
              found.dump());
}

void LayerOptions::require_none(std::string_view kind, const Json& options) { LayerOptions(kind, options, {}); }

void LayerOptions::fail(std::string_view name, std::string_view expected) const {
  throw_option_error(kind_, name, expected, options_.at(std::string(name)));
}

std::int64_t LayerOptions::positive_integer(std::string_view name) const {
  if (!options_.contains(name)) throw Error(kind_ + ": option '" + std::string(name) + "' is required");
  const Json& v = options_.at(std::string(name));
  if (!v.is_number_integer() || v.get<std::int64_t>() <= 0 || v.get<std::int64_t>() > Shape::max_dimension) {
    fail(name, "a positive integer up to " + std::to_string(Shape::max_dimension));
  }
  return v.get<std::int64_t>();
}

std::int64_t LayerOptions::positive_integer(std::string_view name, std::int64_t default_value) const {
  return options_.contains(name) ? positive_integer(name) : default_value;
}

std::int64_t LayerOptions::non_negative_integer(std::string_view name, std::int64_t default_value) const {
  if (!options_.contains(name)) return default_value;
  const Json& v = options_.at(std::string(name));
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > Shape::max_dimension) {
    fail(name, "a non-negative integer up to " + std::to_string(Shape::max_dimension));
  }
  return v.get<std::int64_t>();
}

std::array<std::int64_t, 2> LayerOptions::pair(std::string_view name, std::int64_t minimum) const {
  if (!options_.contains(name)) throw Error(kind_ + ": option '" + std::string(name) + "' is required");
  return pair(name, minimum, {0, 0});
}

std::array<std::int64_t, 2> LayerOptions::pair(std::string_view name, std::int64_t minimum,
                                               std::array<std::int64_t, 2> default_value) const {
  if (!options_.contains(name)) return default_value;
  const Json& v = options_.at(std::string(name));
  const std::string expected = std::string(minimum > 0 ? "a positive integer" : "a non-negative integer") + " up to " +
                               std::to_string(Shape::max_dimension) + " or [h, w] of them";
  auto valid = [&](const Json& x) {
    return x.is_number_integer() && x.get<std::int64_t>() >= minimum && x.get<std::int64_t>() <= Shape::max_dimension;
  };
  if (valid(v)) return {v.get<std::int64_t>(), v.get<std::int64_t>()};
  if (v.is_array() && v.size() == 2 && valid(v[0]) && valid(v[1])) return {v[0].get<std::int64_t>(), v[1].get<std::int64_t>()};
  fail(name, expected);
}

bool LayerOptions::boolean(std::string_view name, bool default_value) const {
  if (!options_.contains(name)) return default_value;
  const Json& v = options_.at(std::string(name));
  if (!v.is_boolean()) fail(name, "true or false");
  return v.get<bool>();
}

double LayerOptions::number(std::string_view name, double default_value, double low, double high) const {
  if (!options_.contains(name)) return default_value;
  const Json& v = options_.at(std::string(name));
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < low || v.get<double>() >= high) {
    fail(name, "a number in [" + Json(low).dump() + ", " + Json(high).dump() + ")");
  }
  return v.get<double>();
}

std::optional<double> LayerOptions::number_or_null(std::string_view name, double default_value, double low, double high) const {
  if (!options_.contains(name)) return default_value;
  const Json& v = options_.at(std::string(name));
  if (v.is_null()) return std::nullopt;
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < low || v.get<double>() > high) {
    fail(name, "a number in [" + Json(low).dump() + ", " + Json(high).dump() + "] or null");
  }
  return v.get<double>();
}

std::string LayerOptions::choice(std::string_view name, std::initializer_list<std::string_view> choices,
                                 std::string_view default_value) const {
  if (!options_.contains(name)) return std::string(default_value);
  const Json& v = options_.at(std::string(name));
  std::vector<std::string> quoted;
  for (std::string_view c : choices) {
    if (v.is_string() && v.get<std::string>() == c) return std::string(c);
    quoted.push_back(Json(c).dump());
  }
  // "a", "b" or "c"
  const std::string last = quoted.back();
  quoted.pop_back();
  fail(name, quoted.empty() ? last : join(quoted) + " or " + last);
}

Json pair_json(const std::array<std::int64_t, 2>& value) {
  if (value[0] == value[1]) return value[0];
  return Json::array({value[0], value[1]});
}

}  // namespace ember
