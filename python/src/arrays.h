#pragma once
// Checks that a numpy array can be read or written in place as C-contiguous float32, so
// the module never copies (or silently converts) what a caller passes.
#include <cstdint>
#include <span>
#include <string>

#include <pybind11/numpy.h>

#include "python/src/bindings.h"

namespace ember::python {

// `object` as a float32 array ember can use in place; ember.ShapeError otherwise, naming
// `what` ("session.run: x") and what was found (type, dtype, layout, alignment).
py::array float32_array(py::handle object, const std::string& what, bool writable);

// The array's dimensions as text: "(64, 1, 28, 28)".
std::string shape_text(const py::array& array);

// The array's dimensions.
std::span<const py::ssize_t> dims(const py::array& array);

}  // namespace ember::python
