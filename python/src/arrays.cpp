#include "python/src/arrays.h"

namespace ember::python {

py::array float32_array(py::handle object, const std::string& what, bool writable) {
  if (!py::isinstance<py::array>(object)) {
    throw_shape_error(what + ": expected a numpy.ndarray of float32, found " +
                      std::string(py::str(py::type::handle_of(object).attr("__name__"))));
  }
  py::array array = py::reinterpret_borrow<py::array>(object);
  const py::dtype dtype = array.dtype();
  if (dtype.num() != py::detail::npy_api::NPY_FLOAT_ || dtype.byteorder() == '>') {
    const std::string found = dtype.attr("name").cast<std::string>() +
                              (dtype.byteorder() == '>' ? " big-endian (" + dtype.attr("str").cast<std::string>() + ")" : "");
    throw_shape_error(what + ": expected dtype float32 (native byte order), found " + found +
                      " (convert with numpy.ascontiguousarray(a, dtype=numpy.float32))");
  }
  if ((array.flags() & py::array::c_style) == 0) {
    std::string strides;
    for (py::ssize_t axis = 0; axis < array.ndim(); ++axis) strides += (axis > 0 ? ", " : "") + std::to_string(array.strides(axis));
    throw_shape_error(what + ": expected a C-contiguous array, found strides (" + strides +
                      ") (make one with numpy.ascontiguousarray)");
  }
  if ((array.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) == 0) {
    throw_shape_error(what + ": the array's data is not aligned to 4 bytes (make an aligned copy with numpy.array)");
  }
  if (writable && !array.writeable()) throw_shape_error(what + ": the array is read-only");
  return array;
}

std::string shape_text(const py::array& array) {
  std::string text = "(";
  for (py::ssize_t axis = 0; axis < array.ndim(); ++axis) {
    if (axis > 0) text += ", ";
    text += std::to_string(array.shape(axis));
  }
  return text + (array.ndim() == 1 ? ",)" : ")");
}

std::span<const py::ssize_t> dims(const py::array& array) {
  return {array.shape(), static_cast<std::size_t>(array.ndim())};
}

}  // namespace ember::python
