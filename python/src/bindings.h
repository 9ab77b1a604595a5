#pragma once
// The pieces of the Python module (module.cpp puts them together), one file each.
#include <pybind11/pybind11.h>

namespace ember::python {

namespace py = pybind11;

// ember.Error (every ember::Error) and ember.ShapeError (also a ValueError: an array of the
// wrong shape, dtype or layout), with the library's messages unchanged.
void bind_errors(py::module_& module);
// Raises ember.ShapeError with `message` (from a binding's own argument checks).
[[noreturn]] void throw_shape_error(const std::string& message);

void bind_session(py::module_& module);   // ember.Session
void bind_training(py::module_& module);  // ember.train
void bind_models(py::module_& module);    // ember.load_spec, save_spec, plan, models, info

}  // namespace ember::python
