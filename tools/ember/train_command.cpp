#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/initial_weights.h"
#include "engine/model_spec.h"
#include "engine/training_state.h"
#include "engine/threading.h"
#include "engine/trainer.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::string clock_text(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
  return text;
}

// A progress bar redrawn in place on a terminal; plain lines (every ~10% of an epoch)
// when the output is a file or a pipe. Evaluations also print the wall time since the
// command started (data loading included), so a run shows its time to accuracy.
class ProgressPrinter final : public TrainingObserver {
 public:
  ProgressPrinter(Clock::time_point start, double stop_at_percent)
      : terminal_(isatty(STDOUT_FILENO) == 1), start_(start), stop_at_percent_(stop_at_percent) {}

  void on_start(const std::string& description) override { std::printf("training: %s\n", description.c_str()); }
  void on_data(const std::string& message) override {
    std::printf("%s\n", message.c_str());
    std::fflush(stdout);
  }

  void on_batch(const BatchProgress& p) override {
    if (terminal_) {
      constexpr int width = 30;
      const int filled = static_cast<int>(width * p.batch / p.batches);
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.resize(width, '.');
      std::printf("\repoch %d/%d [%s] %lld/%lld loss %.4f %.0f img/s ETA %s ", p.epoch, p.epochs, bar.c_str(),
                  static_cast<long long>(p.batch), static_cast<long long>(p.batches), p.loss, p.images_per_second,
                  clock_text(p.eta_seconds).c_str());
      std::fflush(stdout);
    } else if (p.batch == p.batches || p.batch % std::max<std::int64_t>(1, p.batches / 10) == 0) {
      std::printf("epoch %d/%d batch %lld/%lld loss %.4f %.0f img/s\n", p.epoch, p.epochs, static_cast<long long>(p.batch),
                  static_cast<long long>(p.batches), p.loss, p.images_per_second);
      std::fflush(stdout);
    }
  }

  void on_evaluation(const EvaluationReport& r) override {
    if (terminal_) std::printf("\n");
    const std::string at = "step " + std::to_string(r.step) + " (epoch " + std::to_string(r.epoch) + ", batch " +
                           std::to_string(r.batch) + "/" + std::to_string(r.batches) + ")";
    if (std::isnan(r.test_accuracy)) {
      std::printf("%s: test loss %.4f | lr %.3g | %.1f s elapsed\n", at.c_str(), r.test_loss, r.learning_rate, elapsed());
    } else {
      std::printf("%s: test loss %.4f acc %.2f%% | lr %.3g | %.1f s elapsed\n", at.c_str(), r.test_loss,
                  100.0 * r.test_accuracy, r.learning_rate, elapsed());
    }
    if (r.reached_target) reached(r.test_accuracy, r.step);
    std::fflush(stdout);
  }

  void on_epoch(const EpochReport& r) override {
    if (terminal_) std::printf("\n");
    std::string epoch = "epoch " + std::to_string(r.epoch);
    if (r.batch < r.batches) epoch += " (stopped after batch " + std::to_string(r.batch) + "/" + std::to_string(r.batches) + ")";
    if (std::isnan(r.test_accuracy)) {  // regression: no accuracy
      std::printf("%s: train loss %.4f | test loss %.4f | %.0f samples/s, %s | %.1f s elapsed\n", epoch.c_str(), r.train_loss,
                  r.test_loss, r.images_per_second, clock_text(r.seconds).c_str(), elapsed());
    } else {
      std::printf("%s: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% | %.0f img/s, %s | %.1f s elapsed\n",
                  epoch.c_str(), r.train_loss, 100.0 * r.train_accuracy, r.test_loss, 100.0 * r.test_accuracy,
                  r.images_per_second, clock_text(r.seconds).c_str(), elapsed());
    }
    // A stop within the epoch was announced with its evaluation.
    if (r.reached_target && r.batch == r.batches) reached(r.test_accuracy, r.step);
    std::fflush(stdout);
  }

 private:
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void reached(double accuracy, std::int64_t step) {
    std::printf("test accuracy %.2f%% >= %g%% (--stop-at-accuracy) after %lld steps, %.1f s: stopping\n", 100.0 * accuracy,
                stop_at_percent_, static_cast<long long>(step), elapsed());
  }

  bool terminal_;
  Clock::time_point start_;
  double stop_at_percent_;
};

// "0.485,0.456,0.406" (or one number): each finite, and positive where asked.
std::vector<double> number_list(const Flags& flags, const std::string& name, bool positive) {
  const std::string text = flags.text(name);
  std::vector<double> values;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    const double value = std::strtod(item.c_str(), &end);
    if (item.empty() || end != item.c_str() + item.size() || !std::isfinite(value) || (positive && !(value > 0.0))) {
      throw UsageError("ember train: --" + name + ": expected " + (positive ? "positive " : "") +
                       "numbers separated by commas (one, or one per channel), found \"" + text + "\"");
    }
    values.push_back(value);
    start = comma + 1;
  }
  return values;
}

// --resize H,W
void read_resize(const Flags& flags, DataOptions& data) {
  if (!flags.has("resize")) return;
  const std::string text = flags.text("resize");
  long long height = 0, width = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%lld,%lld%c", &height, &width, &tail) != 2 || height < 1 || width < 1 || height > 65536 ||
      width > 65536) {
    throw UsageError("ember train: --resize: expected HEIGHT,WIDTH in pixels (e.g. 32,32), found \"" + text + "\"");
  }
  data.resize_height = height;
  data.resize_width = width;
}

DataOptions data_options(const Flags& flags) {
  DataOptions data;
  data.val_split = flags.number_in("val-split", 0.0, 1.0, false);
  data.test_data = flags.text("test-data");
  if (flags.has("convert")) data.convert = flags.choice("convert", {"rgb", "grey"});
  read_resize(flags, data);
  data.skip_bad_files = flags.on("skip-bad-files");
  data.cache_limit = flags.memory_size("cache-limit");
  data.cache = flags.on("cache");
  data.augment = flags.text("augment");
  data.label_column = flags.text("label-column");
  data.standardize = flags.on("standardize");
  return data;
}

}  // namespace

int train_command(int argc, char** argv) {
  const Clock::time_point start = Clock::now();
  Flags flags("train",
              "Train a model; test loss (and accuracy, for classification) is reported after every epoch (and every "
              "--eval-every steps) with the wall time since the command started.");
  flags.model()
      .value("data", "fashion-mnist, mnist, a directory of IDX files, an image folder (one sub-folder of PNG/JPEG images per class; DIR/train and DIR/test if present), a CSV file, or attention-retrieval (synthetic); default: the model's own, else fashion-mnist", "", "D")
      .value("val-split", "hold out this fraction of an image folder or CSV file as the test split (seeded by --seed) when it has none", "0", "F")
      .value("test-data", "CSV file of the test split (same columns as --data)", "", "PATH")
      .value("convert", "image folders: convert images to the model's channels: rgb or grey (default: a mismatch is an error)", std::nullopt, "C")
      .value("resize", "image folders: resize every image to HEIGHT,WIDTH (bilinear; default: a size mismatch is an error)", std::nullopt, "H,W")
      .toggle("skip-bad-files", "image folders: skip corrupt or unreadable images (counted and listed) instead of failing")
      .value("cache-limit", "image folders: cache the decoded images beside the data (DIR/.ember-cache-*.bin) when they take more than this", "256M", "SIZE")
      .toggle("cache", "image folders: always cache the decoded images")
      .value("augment", "training split only, seeded: crop:P (random crop after zero padding P) and/or flip (horizontal, p=0.5), e.g. crop:4,flip", "", "SPEC")
      .value("label-column", "CSV: the label column, when it is not the last; for regression (an MSE model) several target columns: y1,y2", "", "NAME")
      .toggle("standardize", "CSV: standardize each feature with the training split's mean and std (kept in the checkpoint)")
      .value("epochs", "passes over the training set", "3", "N")
      .value("max-steps", "optimizer steps to train in all, overriding --epochs (the last epoch ends early); 0: --epochs decides", "0", "N")
      .value("batch-size", "samples per optimizer step", "64", "B")
      .value("lr", "learning rate", "1e-3", "LR")
      .value("optimizer", "sgd, adam or adamw", "adam", "NAME")
      .value("weight-decay", "L2 penalty (adam, sgd) or decoupled decay (adamw) (default: 0, for adamw 0.01 as in PyTorch)", std::nullopt, "W")
      .value("momentum", "sgd momentum", "0.9", "M")
      .toggle("nesterov", "sgd: Nesterov momentum")
      .value("schedule",
             "learning-rate schedule: constant, step or cosine (per epoch), or onecycle (PyTorch's OneCycleLR over the "
             "whole run, per step, --lr its peak; the rate only, as with cycle_momentum=False)",
             "constant", "S")
      .value("step-size", "step schedule: epochs between decays", "1", "N")
      .value("gamma", "step schedule: decay factor", "0.1", "G")
      .value("pct-start", "onecycle: fraction of the run spent rising to --lr", "0.3", "P")
      .value("div-factor", "onecycle: the first rate is --lr / this", "25", "D")
      .value("final-div-factor", "onecycle: the last rate is --lr / (div-factor x this)", "1e4", "F")
      .value("clip-norm", "clip the gradient's global L2 norm to this (0: off)", "0", "C")
      .value("label-smoothing", "cross-entropy label smoothing", "0", "E")
      .value("mean", "normalize inputs: (x/255 - mean) / std; one value, or one per channel (0.485,0.456,0.406)", "0", "M")
      .value("std", "normalize inputs: (x/255 - mean) / std; one value, or one per channel", "1", "S")
      .threads("compute threads (OpenMP across the batch; oneDNN included)")
      .value("micro-batch", "samples a thread carries through the network at once (auto: 16, or up to 64 for a model whose weights outweigh its activations)", "auto", "N")
      .value("gradient-lanes", "gradient lanes: a step is bitwise the same for any --threads and any number of MPI ranks up to this", "4", "L")
      .value("mpi-timeout", "under mpirun: stop every rank with an error when a rank has not answered for this many seconds", "120", "SECONDS")
      .toggle("mpi-blocking", "under mpirun: exchange gradients only after the whole backward (default: each lane as soon as it is done)")
      .value("seed", "seed for initialization, shuffling and dropout", "0", "S")
      .value("save", "checkpoint written after every epoch (safetensors)", "", "PATH")
      .value("save-every", "also save the checkpoint after every N optimizer steps (0: only after each epoch)", "0", "N")
      .value("log", "CSV log, one row per epoch", "", "PATH")
      .value("resume", "continue the run saved in this checkpoint", "", "PATH")
      .value("init", "start from these weights (an ember checkpoint, or a PyTorch state_dict saved as safetensors), matched by tensor name; fresh optimizer state and step count (docs/pytorch-weights.md); without --model, an ember checkpoint's own model is trained (ember import's output)", "", "PATH")
      .value("init-skip", "with --init: tensors or layers (comma-separated names or prefixes, e.g. fc2) that keep their fresh initialization", "", "NAMES")
      .value("freeze", "parameters under these comma-separated prefixes (e.g. conv1,conv2) are not updated", "", "PREFIXES")
      .value("train-limit", "use only the first N training images (0: all)", "0", "N")
      .value("test-limit", "use only the first N test images (0: all)", "0", "N")
      .value("eval-every", "also evaluate on the test split every N optimizer steps (0: only after each epoch)", "0", "N")
      .value("stop-at-accuracy",
             "stop at the first evaluation whose test accuracy is at least A percent, e.g. 90 (0: never)", "0", "A")
      .toggle("detect-anomaly", "check inputs, weights, every layer's outputs and gradients and each update for NaN/Inf; stop at the first, naming the step, phase, layer and tensor")
      .memory_limit();
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  TrainOptions options;
  // --init without --model trains the --init file's own model when it has one (an ember
  // checkpoint, `ember import`'s output); a bare state_dict keeps the default model.
  const bool model_of_init = !flags.on("model") && flags.on("init") && file_holds_a_model(flags.text("init"));
  options.model = model_of_init ? flags.text("init") : flags.text("model");
  options.data = flags.text("data");
  options.epochs = static_cast<int>(flags.positive_integer("epochs"));
  options.max_steps = flags.non_negative_integer("max-steps");
  options.batch_size = flags.positive_integer("batch-size");
  options.learning_rate = flags.positive_number("lr");
  options.optimizer = flags.choice("optimizer", {"sgd", "adam", "adamw"});
  // Given (0 included) or not: unset means the optimizer's own default.
  if (flags.on("weight-decay")) options.weight_decay = flags.number_in("weight-decay", 0.0, 1e9, true);
  options.momentum = flags.number_in("momentum", 0.0, 1.0, false);
  options.nesterov = flags.on("nesterov");
  options.schedule = flags.choice("schedule", {"constant", "step", "cosine", "onecycle"});
  options.step_size = static_cast<int>(flags.positive_integer("step-size"));
  options.gamma = flags.positive_number("gamma");
  options.pct_start = flags.number_in("pct-start", 0.0, 1.0, true);
  options.div_factor = flags.positive_number("div-factor");
  options.final_div_factor = flags.positive_number("final-div-factor");
  options.clip_norm = flags.number_in("clip-norm", 0.0, 1e30, true);
  options.label_smoothing = flags.number_in("label-smoothing", 0.0, 1.0, false);
  options.mean = number_list(flags, "mean", false);
  options.std = number_list(flags, "std", true);
  options.data_options = data_options(flags);
  options.threads = flags.thread_count();
  options.micro_batch = flags.positive_integer_or_auto("micro-batch");  // 0: auto
  options.gradient_lanes = static_cast<int>(flags.positive_integer("gradient-lanes"));
  options.mpi_timeout = flags.positive_number("mpi-timeout");
  options.mpi_overlap = !flags.on("mpi-blocking");
  options.seed = static_cast<std::uint64_t>(flags.non_negative_integer("seed"));
  options.save = flags.text("save");
  options.save_every = flags.non_negative_integer("save-every");
  options.log = flags.text("log");
  options.resume = flags.text("resume");
  options.init = flags.text("init");
  options.init_skip = split_names(flags.text("init-skip"));
  options.freeze = split_names(flags.text("freeze"));
  options.train_limit = flags.non_negative_integer("train-limit");
  options.test_limit = flags.non_negative_integer("test-limit");
  options.eval_every = flags.non_negative_integer("eval-every");
  const double stop_at_percent = flags.number_in("stop-at-accuracy", 0.0, 100.0, true);
  options.stop_at_accuracy = stop_at_percent / 100.0;
  options.memory_limit = flags.memory_size("memory-limit");
  options.detect_anomaly = flags.on("detect-anomaly");

  ProgressPrinter printer(start, stop_at_percent);
  train(options, printer);
  return 0;
}

}  // namespace ember::cli
