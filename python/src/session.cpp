// ember.Session: an InferenceSession behind numpy. Arrays are read and written in place,
// and the GIL is released while the session computes, so Python threads share one session
// the way C++ callers do (its thread budget is shared by concurrent calls).
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <pybind11/numpy.h>

#include "engine/error.h"
#include "engine/session.h"
#include "engine/training_state.h"
#include "python/src/arrays.h"
#include "python/src/bindings.h"
#include "python/src/json_objects.h"

namespace ember::python {
namespace {

class Session {
 public:
  Session(const std::string& path, int threads, std::int64_t max_batch, std::int64_t micro_batch, std::size_t memory_limit)
      : path_(path) {
    TrainedModel model = load_trained_model(path, memory_limit);
    output_shape_ = model.graph->value_shape(model.graph->output());
    run_settings_ = std::move(model.run);
    SessionOptions options;
    options.threads = threads;
    options.max_batch = max_batch;
    options.micro_batch = micro_batch;
    options.memory_limit = memory_limit;
    session_ = std::make_shared<const InferenceSession>(std::move(model.graph), std::move(model.parameters), options);
    threads_ = threads;
  }

  py::array run(py::handle x, py::handle out) const {
    std::shared_ptr<const InferenceSession> session = open_session();  // kept alive by this call
    const py::array input = float32_array(x, "session.run: x", /*writable=*/false);
    const std::int64_t batch = checked_batch(input, *session);
    py::array output = out.is_none() ? py::array_t<float>(output_dims(batch))
                                     : checked_output(out, batch, input);
    if (batch == 0) return output;
    const auto* input_data = static_cast<const float*>(input.data());
    auto* output_data = static_cast<float*>(output.mutable_data());
    {
      py::gil_scoped_release release;
      session->run(input_data, batch, output_data);
    }
    return output;
  }

  // Seconds per call of `iterations` calls of the C++ session on x, timed in C++: what a
  // call costs without Python (bench/python_session_bench.py compares the two).
  double time_calls_in_cpp(py::handle x, int iterations) const {
    std::shared_ptr<const InferenceSession> session = open_session();
    const py::array input = float32_array(x, "session._time_calls_in_cpp: x", false);
    const std::int64_t batch = checked_batch(input, *session);
    std::vector<float> output(static_cast<std::size_t>(batch * session->output_sample_elements()));
    const auto* input_data = static_cast<const float*>(input.data());
    py::gil_scoped_release release;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) session->run(input_data, batch, output.data());
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    return seconds.count() / std::max(iterations, 1);
  }

  void close() { session_.reset(); }  // calls in flight keep their reference
  bool closed() const { return session_ == nullptr; }
  const std::string& path() const { return path_; }
  int threads() const { return threads_; }
  std::int64_t max_batch() const { return open_session()->max_batch(); }
  py::tuple input_shape() const { return dims_tuple(open_session()->input_sample_shape().dims()); }
  py::tuple output_shape() const { return dims_tuple(output_shape_.dims().subspan(1)); }
  py::object run_settings() const { return python_object(run_settings_); }
  py::object setting(const char* key, py::object fallback) const {
    return run_settings_.contains(key) ? python_object(run_settings_[key]) : fallback;
  }

 private:
  std::shared_ptr<const InferenceSession> open_session() const {
    if (!session_) throw Error("session '" + path_ + "' is closed");
    return session_;
  }

  static py::tuple dims_tuple(std::span<const std::int64_t> dims) {
    py::tuple tuple(dims.size());
    for (std::size_t i = 0; i < dims.size(); ++i) tuple[i] = py::int_(dims[i]);
    return tuple;
  }

  std::vector<py::ssize_t> output_dims(std::int64_t batch) const {
    std::vector<py::ssize_t> dims{static_cast<py::ssize_t>(batch)};
    for (std::int64_t d : output_shape_.dims().subspan(1)) dims.push_back(static_cast<py::ssize_t>(d));
    return dims;
  }

  // x must be (N, *input_shape) with 0 <= N <= max_batch.
  std::int64_t checked_batch(const py::array& input, const InferenceSession& session) const {
    const Shape& sample = session.input_sample_shape();
    bool matches = input.ndim() == sample.rank() + 1;
    for (int axis = 0; matches && axis < sample.rank(); ++axis) matches = input.shape(axis + 1) == sample[axis];
    if (!matches) {
      throw_shape_error("session.run: x: expected shape (N, " + sample.str().substr(1) + " for the model of '" + path_ +
                        "', found " + shape_text(input));
    }
    const std::int64_t batch = input.shape(0);
    if (batch > session.max_batch()) {
      throw_shape_error("session.run: x: batch " + std::to_string(batch) + " exceeds the session's max_batch " +
                        std::to_string(session.max_batch()) + " (open the session with a larger max_batch)");
    }
    return batch;
  }

  py::array checked_output(py::handle out, std::int64_t batch, const py::array& input) const {
    py::array output = float32_array(out, "session.run: out", /*writable=*/true);
    const std::vector<py::ssize_t> expected = output_dims(batch);
    if (std::vector<py::ssize_t>(dims(output).begin(), dims(output).end()) != expected) {
      throw_shape_error("session.run: out: expected shape " + shape_text(py::array_t<float>(expected)) + ", found " +
                        shape_text(output));
    }
    const auto* in_begin = static_cast<const char*>(input.data());
    const auto* out_begin = static_cast<const char*>(output.data());
    if (in_begin < out_begin + output.nbytes() && out_begin < in_begin + input.nbytes()) {
      throw_shape_error("session.run: out shares memory with x; give separate arrays");
    }
    return output;
  }

  std::string path_;
  Shape output_shape_;
  Json run_settings_;
  int threads_ = 1;
  std::shared_ptr<const InferenceSession> session_;  // null once closed
};

}  // namespace

void bind_session(py::module_& module) {
  py::class_<Session>(module, "Session", "A trained model ready to serve: thread-safe, arrays in and out without copies.")
      .def(py::init<const std::string&, int, std::int64_t, std::int64_t, std::size_t>(), py::arg("path"),
           py::kw_only(), py::arg("threads") = 1, py::arg("max_batch") = 64, py::arg("micro_batch") = 16,
           py::arg("memory_limit") = 0,
           "Opens a checkpoint written by `ember train --save` (or ember.train). threads: the compute threads the "
           "session's concurrent calls share; max_batch: the largest batch a call may pass; memory_limit: bytes "
           "(0: the machine's available memory).")
      .def("run", &Session::run, py::arg("x"), py::kw_only(), py::arg("out") = py::none(),
           "Logits for x, a C-contiguous float32 array of shape (N, *input_shape), N <= max_batch. Written into `out` "
           "(float32, C-contiguous, shape (N, *output_shape)) when given, else into a new array. Releases the GIL.")
      .def("_time_calls_in_cpp", &Session::time_calls_in_cpp, py::arg("x"), py::arg("iterations"))
      .def("close", &Session::close, "Releases the model; calls in flight finish first. Later calls raise ember.Error.")
      .def("__enter__", [](Session& s) -> Session& { return s; }, py::return_value_policy::reference)
      .def("__exit__", [](Session& s, py::args) { s.close(); })
      .def_property_readonly("closed", &Session::closed)
      .def_property_readonly("path", &Session::path)
      .def_property_readonly("threads", &Session::threads)
      .def_property_readonly("max_batch", &Session::max_batch)
      .def_property_readonly("input_shape", &Session::input_shape, "One sample's shape, e.g. (1, 28, 28).")
      .def_property_readonly("output_shape", &Session::output_shape, "One sample's output shape, e.g. (10,).")
      .def_property_readonly("mean", [](const Session& s) { return s.setting("mean", py::float_(0.0)); },
                             "The input normalization the model was trained with: x = (pixel / 255 - mean) / std.")
      .def_property_readonly("std", [](const Session& s) { return s.setting("std", py::float_(1.0)); })
      .def_property_readonly("class_names", [](const Session& s) { return s.setting("class_names", py::none()); },
                             "The class names stored in the checkpoint, or None.")
      .def_property_readonly("run_settings", &Session::run_settings, "The training run's settings, as a dict.")
      .def("__repr__", [](const Session& s) {
        return "<ember.Session '" + s.path() + "'" + (s.closed() ? " closed>" : ", threads=" + std::to_string(s.threads()) + ">");
      });
}

}  // namespace ember::python
