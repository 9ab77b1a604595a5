#include "python/src/bindings.h"

PYBIND11_MODULE(_ember, module) {
  module.doc() = "ember: train and serve convolutional and attention networks on CPUs.";
  ember::python::bind_errors(module);
  ember::python::bind_session(module);
  ember::python::bind_training(module);
  ember::python::bind_models(module);
}
