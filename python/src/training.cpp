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

#include "engine/cpu_count.h"
#include "engine/data_options.h"
#include "engine/error.h"
#include "engine/trainer.h"
#include "python/src/bindings.h"

namespace ember::python {
namespace {

using Setter = std::function<void(TrainOptions&, py::handle)>;

std::string type_name(py::handle value) { return py::str(py::type::handle_of(value).attr("__name__")); }

[[noreturn]] void wrong_type(py::handle value, const std::string& name, const std::string& expected) {
  throw py::type_error("ember.train: " + name + ": expected " + expected + ", found " + type_name(value) + " " +
                       std::string(py::repr(value)));
}

// Keyword values as TrainOptions fields, strictly: no bool for a number, no str for a list.
void convert(py::handle value, const std::string& name, bool& field) {
  if (!PyBool_Check(value.ptr())) wrong_type(value, name, "a bool");
  field = value.cast<bool>();
}

void convert(py::handle value, const std::string& name, std::string& field) {
  if (value.is_none()) field.clear();
  else if (PyUnicode_Check(value.ptr())) field = value.cast<std::string>();
  else if (py::isinstance(value, py::module_::import("os").attr("PathLike"))) field = py::str(py::module_::import("os").attr("fspath")(value));
  else wrong_type(value, name, "a str");
}

template <typename Number>
  requires std::is_arithmetic_v<Number>
void convert(py::handle value, const std::string& name, Number& field) {
  const bool integer = PyLong_Check(value.ptr()) && !PyBool_Check(value.ptr());
  if constexpr (std::is_integral_v<Number>) {
    if (!integer) wrong_type(value, name, "an int");
  } else if (!integer && !PyFloat_Check(value.ptr())) {
    wrong_type(value, name, "a number");
  }
  try {
    field = value.cast<Number>();
  } catch (const py::cast_error&) {
    throw py::value_error("ember.train: " + name + ": " + std::string(py::repr(value)) + " is out of range");
  }
}

void convert(py::handle value, const std::string& name, std::optional<double>& field) {
  if (value.is_none()) {
    field.reset();
    return;
  }
  double number = 0.0;
  convert(value, name, number);
  field = number;
}

// One number, or a list or tuple of them (per-channel normalization).
void convert(py::handle value, const std::string& name, std::vector<double>& field) {
  field.clear();
  if (!py::isinstance<py::list>(value) && !py::isinstance<py::tuple>(value)) {
    convert(value, name, field.emplace_back());
    return;
  }
  for (py::handle item : value) convert(item, name, field.emplace_back());
  if (field.empty()) wrong_type(value, name, "a number or a non-empty list of numbers");
}

// A list or tuple of str, or one str of comma-separated names (as the flag takes them).
void convert(py::handle value, const std::string& name, std::vector<std::string>& field) {
  field.clear();
  if (PyUnicode_Check(value.ptr())) {
    std::string text = value.cast<std::string>();
    for (std::size_t begin = 0; begin <= text.size();) {
      const std::size_t end = std::min(text.find(',', begin), text.size());
      if (end > begin) field.push_back(text.substr(begin, end - begin));
      begin = end + 1;
    }
    return;
  }
  if (!py::isinstance<py::list>(value) && !py::isinstance<py::tuple>(value)) wrong_type(value, name, "a list of str");
  for (py::handle item : value) {
    if (!PyUnicode_Check(item.ptr())) wrong_type(item, name, "a list of str");
    field.push_back(item.cast<std::string>());
  }
}

template <typename Field>
std::pair<const std::string, Setter> option(const char* name, Field TrainOptions::*field) {
  return {name, [name = std::string(name), field](TrainOptions& o, py::handle value) { convert(value, name, o.*field); }};
}

template <typename Field>
std::pair<const std::string, Setter> data_option(const char* name, Field DataOptions::*field) {
  return {name, [name = std::string(name), field](TrainOptions& o, py::handle value) {
            convert(value, name, o.data_options.*field);
          }};
}

// resize=(H, W) or "H,W".
void set_resize(TrainOptions& o, py::handle value) {
  std::vector<std::int64_t> size;
  if (PyUnicode_Check(value.ptr())) {
    std::vector<std::string> parts;
    convert(value, "resize", parts);
    for (const std::string& part : parts) size.push_back(std::atoll(part.c_str()));
  } else if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    for (py::handle item : value) convert(item, "resize", size.emplace_back());
  } else {
    wrong_type(value, "resize", "(height, width)");
  }
  if (size.size() != 2 || size[0] < 1 || size[1] < 1) {
    throw py::value_error("ember.train: resize: expected two positive sizes (height, width), found " + std::string(py::repr(value)));
  }
  o.data_options.resize_height = size[0];
  o.data_options.resize_width = size[1];
}

// Every TrainOptions field, under its CLI flag's name.
const std::map<std::string, Setter>& option_setters() {
  static const std::map<std::string, Setter> setters = {
      option("model", &TrainOptions::model),
      option("data", &TrainOptions::data),
      option("epochs", &TrainOptions::epochs),
      option("max_steps", &TrainOptions::max_steps),
      option("batch_size", &TrainOptions::batch_size),
      option("optimizer", &TrainOptions::optimizer),
      option("lr", &TrainOptions::learning_rate),
      option("weight_decay", &TrainOptions::weight_decay),
      option("momentum", &TrainOptions::momentum),
      option("nesterov", &TrainOptions::nesterov),
      option("schedule", &TrainOptions::schedule),
      option("step_size", &TrainOptions::step_size),
      option("gamma", &TrainOptions::gamma),
      option("pct_start", &TrainOptions::pct_start),
      option("div_factor", &TrainOptions::div_factor),
      option("final_div_factor", &TrainOptions::final_div_factor),
      option("clip_norm", &TrainOptions::clip_norm),
      option("label_smoothing", &TrainOptions::label_smoothing),
      option("mean", &TrainOptions::mean),
      option("std", &TrainOptions::std),
      option("threads", &TrainOptions::threads),
      option("micro_batch", &TrainOptions::micro_batch),
      option("seed", &TrainOptions::seed),
      option("save", &TrainOptions::save),
      option("save_every", &TrainOptions::save_every),
      option("log", &TrainOptions::log),
      option("resume", &TrainOptions::resume),
      option("init", &TrainOptions::init),
      option("init_skip", &TrainOptions::init_skip),
      option("freeze", &TrainOptions::freeze),
      option("train_limit", &TrainOptions::train_limit),
      option("test_limit", &TrainOptions::test_limit),
      option("eval_every", &TrainOptions::eval_every),
      option("memory_limit", &TrainOptions::memory_limit),
      option("detect_anomaly", &TrainOptions::detect_anomaly),
      data_option("val_split", &DataOptions::val_split),
      data_option("test_data", &DataOptions::test_data),
      data_option("convert", &DataOptions::convert),
      {"resize", &set_resize},
      data_option("skip_bad_files", &DataOptions::skip_bad_files),
      data_option("cache_limit", &DataOptions::cache_limit),
      data_option("cache", &DataOptions::cache),
      data_option("augment", &DataOptions::augment),
      data_option("label_column", &DataOptions::label_column),
      data_option("standardize", &DataOptions::standardize),
  };
  return setters;
}

// The CLI's defaults (tools/ember/train_command.cpp) where they differ from TrainOptions'.
TrainOptions cli_defaults() {
  TrainOptions options;
  options.threads = available_compute_threads();
  return options;
}

TrainOptions options_from_keywords(const py::kwargs& keywords) {
  TrainOptions options = cli_defaults();
  const auto& setters = option_setters();
  for (const auto& [key, value] : keywords) {
    const std::string name = py::str(key);
    if (name == "stop_at_accuracy") {  // a percentage, like the flag
      double percent = 0.0;
      convert(value, name, percent);
      options.stop_at_accuracy = percent / 100.0;
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
