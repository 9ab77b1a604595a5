#pragma once
// The training loop behind `ember train`: data, model, optimizer, schedule, evaluation,
// logging and checkpoints. A library function so that servers, tests and the CLI run
// the same loop; it reports progress through an observer and never prints.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/data_options.h"

namespace ember {

struct TrainOptions {
  std::string model = "seed-cnn";      // built-in name, path to a JSON spec, or a checkpoint or ONNX file's model
  // fashion-mnist | mnist | directory of IDX files | image folder | CSV file |
  // attention-retrieval; empty: the model's own (its spec's "data", else fashion-mnist)
  std::string data;
  DataOptions data_options;            // image folders and CSV tables (engine/data_source.h)
  int epochs = 3;
  // Optimizer steps to run in all, overriding epochs (Hugging Face's max_steps): the run
  // takes ceil(max_steps / batches per epoch) epochs and ends within the last; onecycle
  // spans exactly these steps. 0: epochs decides.
  std::int64_t max_steps = 0;
  std::int64_t batch_size = 64;
  std::string optimizer = "adam";      // sgd | adam | adamw
  double learning_rate = 1e-3;
  // Unset: the optimizer's default (0 for sgd and adam, 0.01 for adamw); 0 is a value.
  std::optional<double> weight_decay;
  double momentum = 0.9;               // sgd
  bool nesterov = false;               // sgd
  std::string schedule = "constant";   // constant | step | cosine | onecycle
  int step_size = 1;                   // step schedule: epochs between decays
  double gamma = 0.1;                  // step schedule: decay factor
  // onecycle: PyTorch's OneCycleLR over the run's optimizer steps (max_steps, else epochs x
  // batches per epoch), stepped every step, learning_rate its max_lr (engine/schedule.h).
  double pct_start = 0.3;
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  double clip_norm = 0.0;              // 0: no clipping
  double label_smoothing = 0.0;
  // Input normalization after /255: one value for every channel, or one per channel.
  std::vector<double> mean{0.0}, std{1.0};
  int threads = 1;
  std::int64_t micro_batch = 0;        // 0: auto_micro_batch (engine/executor.h); on --resume, the run's
  std::uint64_t seed = 0;
  std::string save;                    // checkpoint written after every epoch
  std::int64_t save_every = 0;         // also after every N optimizer steps (0: only after each epoch)
  std::string log;                     // CSV, one row per epoch
  std::string resume;                  // checkpoint to continue from
  // Starting weights instead of the seed's (engine/initial_weights.h): an ember checkpoint
  // or a PyTorch state_dict in safetensors, tensors matched by name; those under an
  // init_skip prefix keep their fresh initialization. The optimizer state and the step
  // count start afresh. Not with resume.
  std::string init;
  std::vector<std::string> init_skip;
  // Parameters under these prefixes are not updated (values and optimizer state stay
  // bitwise); recorded in the checkpoint, and a resumed run without its own keeps them.
  std::vector<std::string> freeze;
  std::int64_t train_limit = 0;        // use only the first N training samples (0: all)
  std::int64_t test_limit = 0;         // likewise for the test split
  // Also evaluate on the test split after every N optimizer steps within an epoch (0:
  // only after each epoch); the observer's on_evaluation reports each.
  std::int64_t eval_every = 0;
  // Stop at the first evaluation (after an epoch, or an eval_every one) whose test
  // accuracy is at least this fraction; 0: never. Classification only.
  double stop_at_accuracy = 0.0;
  // Bytes the step may take (engine/memory_limit.h; 0: the available memory), checked
  // before the model's buffers are allocated.
  std::size_t memory_limit = 0;
  // Check inputs, weights, every op's outputs and the optimizer's updated weights for NaN
  // and infinity (ExecutorOptions::detect_anomaly); the first stops training.
  bool detect_anomaly = false;
  // Gradient lanes (ExecutorOptions::gradient_lanes): a step's result is bitwise the same
  // for any thread count up to it and any MPI rank count up to it (engine/distributed.h).
  int gradient_lanes = 4;
  // Launched by mpirun: a collective that does not complete within this many seconds
  // (a rank died or stalled) stops every rank with a message.
  double mpi_timeout = 120.0;
  // Send each gradient lane as soon as it is final, behind the rest of the backward; off,
  // only once the whole backward is done (to measure what overlapping hides).
  bool mpi_overlap = true;
};

struct BatchProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  std::int64_t batch = 0;  // 1-based within the epoch
  std::int64_t batches = 0;
  double loss = 0.0;                // running mean over the epoch so far
  double images_per_second = 0.0;   // this epoch so far
  double eta_seconds = 0.0;         // to the end of this epoch
};

// An evaluation on the test split within an epoch (TrainOptions::eval_every).
struct EvaluationReport {
  int epoch = 0;           // 1-based: the epoch in progress
  std::int64_t batch = 0;  // batches of it done
  std::int64_t batches = 0;
  std::int64_t step = 0;   // optimizer steps done in all
  double test_loss = 0.0, test_accuracy = 0.0;  // accuracy NaN for regression
  double learning_rate = 0.0;  // of the last step
  double seconds = 0.0;        // the evaluation's own
  bool reached_target = false; // test_accuracy >= TrainOptions::stop_at_accuracy: training stops
};

struct EpochReport {
  int epoch = 0;  // 1-based
  // Batches of the epoch run; batch < batches when training stopped within it
  // (reached_target, or max_steps), and the train loss and accuracy cover those batches.
  std::int64_t batch = 0, batches = 0;
  bool reached_target = false;  // test accuracy >= TrainOptions::stop_at_accuracy: the last report
  double train_loss = 0.0, train_accuracy = 0.0;
  double test_loss = 0.0, test_accuracy = 0.0;
  double seconds = 0.0;
  double images_per_second = 0.0;   // training step throughput (data preparation included)
  double learning_rate = 0.0;
  std::int64_t step = 0;
};

class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  virtual void on_start(const std::string& description) {}
  // Data loading: decoding progress, skipped files, the cache (one line each).
  virtual void on_data(const std::string& message) {}
  virtual void on_batch(const BatchProgress& progress) {}
  virtual void on_evaluation(const EvaluationReport& report) {}
  // After each epoch's evaluation, and once more for a partial epoch when training stops
  // within it (its test results are those of the evaluation that stopped it).
  virtual void on_epoch(const EpochReport& report) {}
};

// Throws ember::Error on bad options, bad data, or a non-finite loss or gradient (the
// step is not applied and the last checkpoint written stays as it was). A run resumed
// from a checkpoint saved within an epoch continues at the next batch of that epoch; the
// epoch's reported train loss and accuracy then cover only the batches run since.
// Saving to options.save first removes temporaries that dead writers left beside it.
// With stop_at_accuracy, training ends at the first evaluation that reaches it: the
// checkpoint (options.save) and the log then hold that step.
// With detect_anomaly, the error names the step and where the first non-finite value
// appeared; a step that fails the check is never saved, so the last checkpoint is intact.
// Launched by mpirun with R ranks (engine/distributed.h): every rank runs its share of
// every batch, the steps, checkpoints and printed numbers are bitwise those of one
// process; only rank 0 reports to the observer and writes the checkpoint and the log. An
// error on any rank is printed and stops every rank (MPI_Abort) instead of being thrown.
std::vector<EpochReport> train(const TrainOptions& options, TrainingObserver& observer);

}  // namespace ember
