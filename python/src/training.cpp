// ember.train: the CLI's training loop (engine/trainer.h) with its options as keyword
// arguments, named like the flags (--batch-size -> batch_size). The GIL is released while
// training runs; it is taken back to call the per-epoch callback and, between batches, to
// let Ctrl-C stop the run.
#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/trainer.h"
#include "python/src/bindings.h"

namespace ember::python {
namespace {

using Setter = std::function<void(TrainOptions&, py::handle)>;

template <typename T>
T keyword_value(py::handle value, const std::string& name, const char* expected) {
  const bool is_bool = PyBool_Check(value.ptr());
  bool fits = false;
  if constexpr (std::is_same_v<T, bool>) fits = is_bool;
  else if constexpr (std::is_integral_v<T>) fits = !is_bool && PyLong_Check(value.ptr());
  else if constexpr (std::is_floating_point_v<T>) fits = !is_bool && (PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr()));
  else fits = PyUnicode_Check(value.ptr()) || value.is_none();
  if (!fits) {
    throw py::type_error("ember.train: " + name + ": expected " + expected + ", found " +
                         std::string(py::str(py::type::handle_of(value).attr("__name__"))) + " " + std::string(py::repr(value)));
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (value.is_none()) return {};
    return value.cast<std::string>();
  } else {
    try {
      return value.cast<T>();
    } catch (const py::cast_error&) {
      throw py::value_error("ember.train: " + name + ": " + std::string(py::repr(value)) + " is out of range");
    }
  }
}

template <typename Field>
std::pair<const std::string, Setter> option(const char* name, Field TrainOptions::*field, const char* expected) {
  return {name, [name = std::string(name), field, expected](TrainOptions& o, py::handle value) {
            o.*field = keyword_value<Field>(value, name, expected);
          }};
}

// Every TrainOptions field, under its CLI flag's name.
const std::map<std::string, Setter>& option_setters() {
  static const std::map<std::string, Setter> setters = {
      option("model", &TrainOptions::model, "a built-in model name or a spec path"),
      option("data", &TrainOptions::data, "a data set name or path"),
      option("epochs", &TrainOptions::epochs, "an int"),
      option("max_steps", &TrainOptions::max_steps, "an int"),
      option("batch_size", &TrainOptions::batch_size, "an int"),
      option("optimizer", &TrainOptions::optimizer, "'sgd', 'adam' or 'adamw'"),
      option("lr", &TrainOptions::learning_rate, "a number"),
      option("weight_decay", &TrainOptions::weight_decay, "a number"),
      option("momentum", &TrainOptions::momentum, "a number"),
      option("nesterov", &TrainOptions::nesterov, "a bool"),
      option("schedule", &TrainOptions::schedule, "'constant', 'step', 'cosine' or 'onecycle'"),
      option("step_size", &TrainOptions::step_size, "an int"),
      option("gamma", &TrainOptions::gamma, "a number"),
      option("pct_start", &TrainOptions::pct_start, "a number"),
      option("div_factor", &TrainOptions::div_factor, "a number"),
      option("final_div_factor", &TrainOptions::final_div_factor, "a number"),
      option("clip_norm", &TrainOptions::clip_norm, "a number"),
      option("label_smoothing", &TrainOptions::label_smoothing, "a number"),
      option("mean", &TrainOptions::mean, "a number"),
      option("std", &TrainOptions::std, "a number"),
      option("threads", &TrainOptions::threads, "an int"),
      option("micro_batch", &TrainOptions::micro_batch, "an int"),
      option("seed", &TrainOptions::seed, "a non-negative int"),
      option("save", &TrainOptions::save, "a path"),
      option("save_every", &TrainOptions::save_every, "an int"),
      option("log", &TrainOptions::log, "a path"),
      option("resume", &TrainOptions::resume, "a path"),
      option("train_limit", &TrainOptions::train_limit, "an int"),
      option("test_limit", &TrainOptions::test_limit, "an int"),
      option("eval_every", &TrainOptions::eval_every, "an int"),
      option("memory_limit", &TrainOptions::memory_limit, "a number of bytes"),
      option("detect_anomaly", &TrainOptions::detect_anomaly, "a bool"),
  };
  return setters;
}

// The CLI's defaults (tools/ember/train_command.cpp) where they differ from TrainOptions'.
TrainOptions cli_defaults() {
  TrainOptions options;
  return options;
}

TrainOptions options_from_keywords(const py::kwargs& keywords) {
  TrainOptions options = cli_defaults();
  const auto& setters = option_setters();
  for (const auto& [key, value] : keywords) {
    const std::string name = py::str(key);
    if (name == "stop_at_accuracy") {  // a percentage, like the flag
      options.stop_at_accuracy = keyword_value<double>(value, name, "a percentage") / 100.0;
      continue;
    }
    const auto setter = setters.find(name);
    if (setter == setters.end()) {
      std::vector<std::string> names{"stop_at_accuracy"};
      for (const auto& entry : setters) names.push_back(entry.first);
      std::sort(names.begin(), names.end());
      std::string known;
      for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
      throw py::type_error("ember.train: unknown keyword argument '" + name + "' (known: " + known + ")");
    }
    setter->second(options, value);
  }
  return options;
}

py::dict epoch_dict(const EpochReport& r) {
  py::dict d;
  d["epoch"] = r.epoch;
  d["batch"] = r.batch;
  d["batches"] = r.batches;
  d["step"] = r.step;
  d["train_loss"] = r.train_loss;
  d["train_accuracy"] = r.train_accuracy;
  d["test_loss"] = r.test_loss;
  d["test_accuracy"] = r.test_accuracy;
  d["seconds"] = r.seconds;
  d["images_per_second"] = r.images_per_second;
  d["learning_rate"] = r.learning_rate;
  d["reached_target"] = r.reached_target;
  return d;
}

// Raised through the training loop when the callback fails or Ctrl-C arrives; the Python
// error it carries is restored once the loop has unwound.
struct PythonErrorInLoop {
  std::shared_ptr<py::error_already_set> error;
};

class CallbackObserver final : public TrainingObserver {
 public:
  explicit CallbackObserver(py::object callback) : callback_(std::move(callback)) {}

  void on_batch(const BatchProgress&) override {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw PythonErrorInLoop{std::make_shared<py::error_already_set>()};
  }

  void on_epoch(const EpochReport& report) override {
    py::gil_scoped_acquire gil;
    py::dict metrics = epoch_dict(report);
    reports_.append(metrics);
    if (callback_.is_none()) return;
    try {
      callback_(metrics);
    } catch (py::error_already_set& e) {
      throw PythonErrorInLoop{std::make_shared<py::error_already_set>(std::move(e))};
    }
  }

  py::list& reports() { return reports_; }

 private:
  py::object callback_;
  py::list reports_;
};

py::list train_from_python(py::object callback, const py::kwargs& keywords) {
  const TrainOptions options = options_from_keywords(keywords);
  CallbackObserver observer(std::move(callback));
  try {
    py::gil_scoped_release release;
    train(options, observer);
  } catch (PythonErrorInLoop& failure) {
    failure.error->restore();
    throw py::error_already_set();
  }
  return observer.reports();
}

}  // namespace

void bind_training(py::module_& module) {
  module.def("train", &train_from_python, py::kw_only(), py::arg("callback") = py::none(),
             "Trains a model as `ember train` does; keyword arguments are its flags with '_' for '-' (model, data, "
             "epochs, batch_size, lr, optimizer, schedule, threads, seed, save, ...). callback(metrics) is called after "
             "every epoch with a dict (epoch, train_loss, train_accuracy, test_loss, test_accuracy, images_per_second, "
             "learning_rate, step, ...). Returns the list of those dicts. Raises ember.Error on bad options or data.");
}

}  // namespace ember::python
