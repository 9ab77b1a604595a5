#include <exception>
#include <string>

#include "engine/error.h"
#include "python/src/bindings.h"

namespace ember::python {
namespace {

// Thrown by the binding's own checks, translated to ember.ShapeError.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// The exception types live as long as the interpreter; pybind11's translators are plain
// functions, so they reach them through these handles, set once when the module loads.
struct ExceptionTypes {
  PyObject* error = nullptr;
  PyObject* shape_error = nullptr;
};

ExceptionTypes& exception_types() {
  static ExceptionTypes types;
  return types;
}

void translate(std::exception_ptr exception) {
  try {
    if (exception) std::rethrow_exception(exception);
  } catch (const ShapeError& e) {
    PyErr_SetString(exception_types().shape_error, e.what());
  } catch (const Error& e) {
    PyErr_SetString(exception_types().error, e.what());
  }
}

}  // namespace

void throw_shape_error(const std::string& message) { throw ShapeError(message); }

void bind_errors(py::module_& module) {
  ExceptionTypes& types = exception_types();
  types.error = PyErr_NewExceptionWithDoc("ember.Error", "An error from ember; the message names the file, field or "
                                          "argument, the expected and the found value.", PyExc_RuntimeError, nullptr);
  py::tuple bases = py::make_tuple(py::handle(types.error), py::handle(PyExc_ValueError));
  types.shape_error = PyErr_NewExceptionWithDoc("ember.ShapeError", "An array of the wrong shape, dtype or memory layout.",
                                                bases.ptr(), nullptr);
  if (types.error == nullptr || types.shape_error == nullptr) throw py::error_already_set();
  module.add_object("Error", py::handle(types.error));
  module.add_object("ShapeError", py::handle(types.shape_error));
  py::register_exception_translator(&translate);
}

}  // namespace ember::python
