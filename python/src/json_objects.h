#pragma once
// nlohmann::json values as Python objects (dicts, lists, numbers, strings), through
// Python's json module so the two agree on every value.
#include <nlohmann/json.hpp>
#include <pybind11/pybind11.h>

namespace ember::python {

inline pybind11::object python_object(const nlohmann::json& value) {
  return pybind11::module_::import("json").attr("loads")(value.dump());
}

inline nlohmann::json json_value(pybind11::handle object) {
  return nlohmann::json::parse(pybind11::str(pybind11::module_::import("json").attr("dumps")(object)).cast<std::string>());
}

}  // namespace ember::python
