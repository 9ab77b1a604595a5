#include "engine/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>

#include "engine/abandoned_temporaries.h"
#include "engine/anomaly.h"
#include "engine/clip.h"
#include "engine/data_source.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/initial_weights.h"
#include "engine/loss.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/onnx_import.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/random.h"
#include "engine/schedule.h"
#include "engine/step_memory.h"
#include "engine/text.h"
#include "engine/training_state.h"

namespace ember {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void check_options(const TrainOptions& o) {
  if (o.epochs < 1) throw Error("epochs must be at least 1, found " + std::to_string(o.epochs));
  if (o.max_steps < 0) throw Error("max_steps must be 0 or positive, found " + std::to_string(o.max_steps));
  if (o.batch_size < 1) throw Error("batch size must be positive, found " + std::to_string(o.batch_size));
  if (!(o.learning_rate > 0.0) || !std::isfinite(o.learning_rate)) {
    throw Error("learning rate must be positive, found " + std::to_string(o.learning_rate));
  }
  if (o.threads < 1) throw Error("threads must be at least 1, found " + std::to_string(o.threads));
  if (o.micro_batch < 0) {
    throw Error("micro_batch must be positive, or 0 to choose it from the model and batch, found " +
                std::to_string(o.micro_batch));
  }
  for (double s : o.std) {
    if (!(s > 0.0)) throw Error("normalization std must be positive, found " + std::to_string(s));
  }
  const std::string& convert = o.data_options.convert;
  if (!convert.empty() && convert != "rgb" && convert != "grey") {
    throw Error("convert must be rgb or grey (or empty: no conversion), found '" + convert + "'");
  }
  if (o.save_every < 0) throw Error("save_every must be 0 or positive, found " + std::to_string(o.save_every));
  if (o.eval_every < 0) throw Error("eval_every must be 0 or positive, found " + std::to_string(o.eval_every));
  if (!o.init.empty() && !o.resume.empty()) {
    throw Error("--init " + o.init + " and --resume " + o.resume +
                ": expected one of them (--init starts a new run from the weights, --resume continues a run)");
  }
  if (!o.init_skip.empty() && o.init.empty()) throw Error("--init-skip needs --init");
  if (!(o.stop_at_accuracy >= 0.0 && o.stop_at_accuracy <= 1.0)) {
    throw Error("stop_at_accuracy must be a fraction in [0, 1] (0: never), found " + std::to_string(o.stop_at_accuracy));
  }
}

// The optimizer as the checkpoint records it: the weight decay it used (its default if unset).
Json optimizer_json(const TrainOptions& o, const Optimizer& optimizer) {
  const double weight_decay = *optimizer.options().weight_decay;
  return Json{{"name", o.optimizer},   {"learning_rate", o.learning_rate}, {"weight_decay", weight_decay},
              {"momentum", o.momentum}, {"nesterov", o.nesterov},          {"schedule", o.schedule},
              {"step_size", o.step_size}, {"gamma", o.gamma}};
}

// Training-run settings that must match for --resume to continue the same run.
Json run_json(const TrainOptions& o) {
  // The epoch count is not part of it (a run may be extended), except where the cosine
  // schedule's period is the run's length.
  Json run{{"seed", o.seed},   {"batch_size", o.batch_size}, {"cosine_epochs", o.schedule == "cosine" ? o.epochs : 0},
           {"data", o.data},   {"mean", normalization_json(o.mean)}, {"std", normalization_json(o.std)},
           {"micro_batch", o.micro_batch}, {"label_smoothing", o.label_smoothing},
           {"clip_norm", o.clip_norm}, {"train_limit", o.train_limit}};
  // Recorded only when used, so that checkpoints of other runs (and those written before
  // these existed) still match. A run's step count fixes where it ends and the cosine's
  // period; one-cycle's rates depend on the run's length and shape.
  if (o.max_steps > 0) run["max_steps"] = o.max_steps;
  if (!o.freeze.empty()) run["freeze"] = o.freeze;
  add_data_options(run, o.data_options);
  if (o.gradient_lanes != 4) run["gradient_lanes"] = o.gradient_lanes;  // the lane sum's order
  if (o.schedule == "onecycle") {
    run["one_cycle"] = Json{{"epochs", o.max_steps > 0 ? 0 : o.epochs}, {"pct_start", o.pct_start},
                            {"div_factor", o.div_factor}, {"final_div_factor", o.final_div_factor}};
  }
  return run;
}

// The frozen prefixes a checkpoint's run recorded (none if it has none).
std::vector<std::string> recorded_freeze(const Json& run, const std::string& path) {
  if (!run.contains("freeze")) return {};
  const Json& freeze = run["freeze"];
  const bool strings = freeze.is_array() && std::all_of(freeze.begin(), freeze.end(), [](const Json& v) { return v.is_string(); });
  if (!strings) throw Error(path + ": __metadata__.run.freeze: expected an array of strings, found " + freeze.dump());
  return freeze.get<std::vector<std::string>>();
}

// ", 4640 parameters frozen (conv1)" for the run's first line.
std::string frozen_text(std::span<const Optimizer::Range> frozen, const std::vector<std::string>& prefixes) {
  if (frozen.empty()) return {};
  std::int64_t count = 0;
  for (const Optimizer::Range& r : frozen) count += r.end - r.begin;
  return ", " + std::to_string(count) + " parameters frozen (" + join(prefixes, ", ") + ")";
}


// The observer of ranks other than the first: only rank 0 reports.
class SilentObserver final : public TrainingObserver {};

// The samples of a batch of `count` that this rank runs (engine/distributed.h); empty
// (all) in one process.
SampleFilter rank_samples(const Communicator& world, const ExecutorOptions& options, std::int64_t count, Mode mode) {
  if (world.size() == 1) return {};
  const BatchLayout layout = batch_layout(options, count, mode);
  return [layout, micro = options.micro_batch, rank = world.rank(), ranks = world.size()](std::int64_t i) {
    return rank_runs_micro_batch(layout, i / micro, rank, ranks);
  };
}

std::int64_t batch_count(std::int64_t samples, std::int64_t batch_size, std::int64_t b) {
  return std::min(batch_size, samples - b * batch_size);
}

// The model of --model: a built-in name or a JSON spec (model_spec.h), or a checkpoint or
// ONNX file whose model it is (`ember import`'s output, fine-tuned with --init).
Json training_model_spec(const std::string& model) {
  const bool checkpoint = model.size() > 12 && model.compare(model.size() - 12, 12, ".safetensors") == 0;
  return checkpoint || is_onnx_path(model) ? model_spec_of_file(model) : load_model_spec(model);
}

std::vector<EpochReport> train_on(const TrainOptions& requested, TrainingObserver& rank_observer, Communicator& world) {
  check_options(requested);
  // The run's options as it runs them: a resumed run keeps its checkpoint's frozen
  // parameters, and the micro-batch is chosen when none was asked for.
  TrainOptions options = requested;
  const Json spec = training_model_spec(options.model);
  const Graph graph = graph_from_spec(spec, options.model);
  const Shape& input_shape = graph.input_sample_shape();
  const std::size_t memory_limit = resolve_memory_limit(requested.memory_limit);
  ParameterLayout layout = parameter_layout(graph);
  if (options.micro_batch == 0) options.micro_batch = auto_micro_batch(graph, layout.total_floats, options.batch_size);
  check_model_memory(graph, layout, options.micro_batch, memory_limit, options.model);
  ParameterStore parameters(std::move(layout));
  parameters.initialize(options.seed);
  std::string init_text;
  if (!options.init.empty()) {
    init_text = ", weights from " + options.init + " (" + load_initial_weights(options.init, options.init_skip, parameters).text() + ")";
  }
  frozen_ranges(parameters, options.freeze);  // an unknown prefix is refused before the data is loaded

  OptimizerOptions optimizer_options;
  optimizer_options.learning_rate = static_cast<float>(options.learning_rate);
  if (options.weight_decay) optimizer_options.weight_decay = static_cast<float>(*options.weight_decay);
  if (options.optimizer == "sgd") {
    optimizer_options.momentum = static_cast<float>(options.momentum);
    optimizer_options.nesterov = options.nesterov;
  }
  ExecutorOptions executor_options;
  executor_options.threads = options.threads;
  executor_options.micro_batch = options.micro_batch;
  executor_options.detect_anomaly = options.detect_anomaly;
  executor_options.gradient_lanes = options.gradient_lanes;
  const int ranks = world.size();
  if (ranks > options.gradient_lanes) {
    throw Error(std::to_string(ranks) + " MPI ranks but " + std::to_string(options.gradient_lanes) +
                " gradient lanes: every rank runs whole lanes, so at most as many ranks as lanes (--gradient-lanes)");
  }
  SilentObserver silent;
  TrainingObserver& observer = world.rank() == 0 ? rank_observer : silent;
  // The whole step (gradient lanes, optimizer state, arenas) before any of it exists.
  StepMemoryOptions step_memory;
  step_memory.batch = options.batch_size;
  step_memory.executor = executor_options;
  step_memory.optimizer = options.optimizer;
  step_memory.optimizer_options = optimizer_options;
  check_step_memory(estimate_step_memory(graph, parameters, step_memory), memory_limit, options.model);
  std::unique_ptr<Optimizer> optimizer = make_optimizer(options.optimizer, optimizer_options, parameters);
  // The spec may name its loss and its default data (attention-mse: MSE on a synthetic task).
  const std::string loss_name = spec_loss_name(spec);
  const std::string data_name = !options.data.empty() ? options.data : spec.value("data", std::string("fashion-mnist"));
  const std::unique_ptr<Loss> loss = make_loss(loss_name, static_cast<float>(options.label_smoothing));
  const ModelDataNeeds needs{input_shape, graph.value_shape(graph.output()).sample_elements(), loss_name == "mse"};
  TrainingData data = open_training_data(data_name, needs, options, observer);
  if (options.stop_at_accuracy > 0.0 && data.target_floats > 0) {
    throw Error("stop at accuracy: " + data_name + " is a regression task (" + loss_name + "); it has no accuracy");
  }
  ScheduleOptions schedule_options;
  schedule_options.kind = schedule_kind_from_name(options.schedule);
  schedule_options.unit = ScheduleUnit::epochs;
  schedule_options.steps_per_epoch = data.train_batches;
  schedule_options.step_size = options.step_size;
  schedule_options.gamma = options.gamma;
  // With max_steps, the epochs it takes, the last of them partial.
  const std::int64_t total_steps = options.max_steps > 0 ? options.max_steps : options.epochs * data.train_batches;
  const int epochs = static_cast<int>((total_steps + data.train_batches - 1) / data.train_batches);
  schedule_options.t_max = epochs;
  if (schedule_options.kind == ScheduleKind::one_cycle) {
    // Stepped every optimizer step, as PyTorch's OneCycleLR(epochs=, steps_per_epoch=) is.
    schedule_options.unit = ScheduleUnit::steps;
    schedule_options.total_steps = total_steps;
    schedule_options.pct_start = options.pct_start;
    schedule_options.div_factor = options.div_factor;
    schedule_options.final_div_factor = options.final_div_factor;
  }
  const LearningRateSchedule schedule(options.learning_rate, schedule_options);

  int first_epoch = 0;
  std::int64_t first_batch = 0;  // of first_epoch: a checkpoint saved within an epoch continues there
  std::int64_t step = 0;
  if (!options.resume.empty()) {
    const TrainingState state = load_training_state(options.resume, parameters, *optimizer);
    if (state.model_spec != spec_from_graph(graph, spec.value("name", "model"))) {
      throw Error(options.resume + ": the checkpoint's model differs from --model " + options.model);
    }
    if (options.freeze.empty()) options.freeze = recorded_freeze(state.run, options.resume);
    // The loss and the data the run used are recorded for ember eval; the model spec and
    // --data decide them, so they are not compared here (checkpoints before ember recorded
    // them lack them).
    Json settings = state.run;
    settings.erase("loss");
    settings.erase("dataset");
    settings.erase("init");  // where the weights started: not a setting of the continued run
    for (const auto& item : data.metadata.items()) settings.erase(item.key());
    // No micro-batch asked for: the run's own (checkpoints before the automatic choice
    // record 16), then the memory checked again for it.
    const auto recorded = settings.find("micro_batch");
    if (requested.micro_batch == 0 && recorded != settings.end() && recorded->is_number_integer() &&
        recorded->get<std::int64_t>() >= 1 && recorded->get<std::int64_t>() != options.micro_batch) {
      options.micro_batch = recorded->get<std::int64_t>();
      executor_options.micro_batch = options.micro_batch;
      step_memory.executor = executor_options;
      check_step_memory(estimate_step_memory(graph, parameters, step_memory), memory_limit, options.model);
    }
    if (settings != run_json(options)) {
      throw Error(options.resume + ": the checkpoint was trained with " + state.run.dump() +
                  "; --resume continues only the same run, found " + run_json(options).dump());
    }
    first_epoch = state.epoch;
    step = state.step;
    // Saved after `step` steps, of which `epoch` whole epochs: the rest are this epoch's batches.
    if (step / data.train_batches != state.epoch) {
      throw Error(options.resume + ": step " + std::to_string(step) + " is not within epoch " +
                  std::to_string(state.epoch + 1) + " of this run's " + std::to_string(data.train_batches) +
                  " batches per epoch");
    }
    first_batch = step % data.train_batches;
  }
  if (!options.save.empty() && world.rank() == 0) remove_abandoned_temporaries(options.save);
  const std::vector<Optimizer::Range> frozen = frozen_ranges(parameters, options.freeze);
  optimizer->freeze(frozen);

  Executor executor(graph, parameters, executor_options);
  executor.distribute_over(&world);

  const std::string buffers =
      parameters.buffer_count() > 0 ? " (and " + std::to_string(parameters.buffer_count()) + " buffer values)" : "";
  observer.on_start(std::to_string(parameters.parameter_count()) + " parameters" + buffers + ", " + std::to_string(data.train_size) +
                    " training and " + std::to_string(data.test_size) + " test samples (" + data_name + "), " +
                    std::to_string(options.threads) + " thread(s)" +
                    (ranks > 1 ? " on each of " + std::to_string(ranks) + " MPI ranks" : std::string()) + init_text + frozen_text(frozen, options.freeze));

  std::ofstream log;
  if (!options.log.empty() && world.rank() == 0) {
    const bool append = !options.resume.empty();
    // A resumed run appends to its log; a new or empty one gets the header first.
    std::error_code ignored;
    const bool has_rows = append && std::filesystem::file_size(options.log, ignored) > 0 && !ignored;
    log.open(options.log, append ? std::ios::app : std::ios::trunc);
    if (!log) throw Error(options.log + ": cannot open the training log for writing");
    if (!has_rows) log << "epoch,step,learning_rate,train_loss,train_accuracy,test_loss,test_accuracy,seconds,images_per_second\n";
  }

  std::vector<float> inputs(static_cast<std::size_t>(data.max_batch * input_shape.elements()));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(data.max_batch));
  std::vector<float> values(static_cast<std::size_t>(data.max_batch * data.target_floats));
  auto targets_of = [&](std::int64_t count) {
    return data.target_floats > 0 ? Targets{{}, values.data()}
                                  : Targets{std::span<const std::int32_t>(labels.data(), static_cast<std::size_t>(count)), nullptr};
  };
  // `completed_epochs` whole epochs and `step` steps in all.
  auto save_checkpoint = [&](int completed_epochs) {
    TrainingState state;
    state.model_spec = spec_from_graph(graph, spec.value("name", "model"));
    state.optimizer = optimizer_json(options, *optimizer);
    state.run = run_json(options);
    state.run["loss"] = loss_name;
    state.run["dataset"] = data_name;
    if (!options.init.empty()) state.run["init"] = Json{{"path", options.init}, {"skip", options.init_skip}};
    state.run.update(data.metadata);
    state.epoch = completed_epochs;
    state.step = step;
    // Every rank holds the same weights and optimizer state; the first writes them.
    if (world.rank() == 0) save_training_state(options.save, state, parameters, *optimizer);
  };
  const std::string checkpoint_intact =
      options.save.empty() ? std::string() : "; the last checkpoint in " + options.save + " is intact";
  // Regression has no accuracy: NaN says so.
  const double no_accuracy = std::numeric_limits<double>::quiet_NaN();
  auto accuracy_of = [&](const StepResult& total) {
    return data.target_floats > 0 ? no_accuracy : static_cast<double>(total.correct) / static_cast<double>(total.samples);
  };
  // The tolerance keeps a target given in percent (90.37 / 100) from missing the same
  // accuracy counted in samples (9037 / 10000) by a rounding.
  auto reaches_target = [&](double accuracy) {
    return options.stop_at_accuracy > 0.0 && accuracy >= options.stop_at_accuracy - 1e-12;
  };
  // The whole test split; `when` says which evaluation, for errors.
  auto evaluate_test_split = [&](const std::string& when) {
    StepResult test_total;
    for (std::int64_t b = 0; b < data.test_batches; ++b) {
      const std::int64_t count = data.test_batch(
          0, b, inputs.data(), labels.data(), values.data(),
          rank_samples(world, executor_options, batch_count(data.test_size, data.test_batch_size, b), Mode::inference));
      try {
        test_total += executor.evaluate(inputs.data(), count, targets_of(count), *loss);
      } catch (const AnomalyError& e) {
        throw Error("evaluation " + when + ", test batch " + std::to_string(b + 1) + ": " + e.what() +
                    "; training stopped before saving" + checkpoint_intact);
      }
    }
    return test_total;
  };
  std::vector<EpochReport> reports;
  for (int epoch = first_epoch; epoch < epochs && step < total_steps; ++epoch) {
    const auto start = Clock::now();
    const std::int64_t batches = data.train_batches;
    const std::int64_t start_batch = epoch == first_epoch ? first_batch : 0;
    StepResult epoch_total;
    double learning_rate = 0.0;
    double evaluation_seconds = 0.0;  // within the epoch, kept out of its training throughput
    std::int64_t last_batch = batches;  // 1-based: where the epoch ended
    std::optional<StepResult> stopping_evaluation;  // the one that reached the target within the epoch
    for (std::int64_t b = start_batch; b < batches; ++b) {
      const std::int64_t count = data.train_batch(
          epoch, b, inputs.data(), labels.data(), values.data(),
          rank_samples(world, executor_options, batch_count(data.train_size, data.train_batch_size, b), Mode::training));
      const Targets targets = targets_of(count);
      const std::uint64_t step_seed = mix64(options.seed ^ mix64(static_cast<std::uint64_t>(step) + 1));
      auto where = [&] {
        return "step " + std::to_string(step + 1) + " (epoch " + std::to_string(epoch + 1) + ", batch " +
               std::to_string(b + 1) + ")";
      };
      StepResult result;
      try {
        result = executor.train_step(inputs.data(), count, targets, *loss, step_seed);
      } catch (const AnomalyError& e) {
        throw Error(where() + ": " + e.what() + "; training stopped before applying this step" + checkpoint_intact);
      }
      zero_frozen_gradients(frozen, parameters);
      const double mean_loss = result.mean_loss();
      if (!std::isfinite(mean_loss)) {
        throw Error(where() + ": the loss is " + std::to_string(mean_loss) + "; training stopped before applying this step" +
                    checkpoint_intact);
      }
      if (options.clip_norm > 0.0) {
        clip_grad_norm(parameters.gradients(), static_cast<float>(options.clip_norm));
      }
      if (!is_finite(std::span<const float>(parameters.gradients()))) {
        throw Error(where() + ": a gradient is not finite; training stopped before applying this step" + checkpoint_intact);
      }
      learning_rate = schedule.at(step);
      optimizer->set_learning_rate(static_cast<float>(learning_rate));
      optimizer->step(options.threads);
      if (options.detect_anomaly) {
        if (auto bad = find_parameter_anomaly(graph, parameters, parameters.values(), "optimizer", "")) {
          bad->tensor = "updated " + bad->tensor;
          char rate[32];
          std::snprintf(rate, sizeof rate, "%g", learning_rate);
          bad->note = std::string("its gradient and the weights before the update were finite; learning rate ") + rate;
          throw Error(where() + ": " + describe(*bad) + "; training stopped" + checkpoint_intact);
        }
        // Running statistics the step's forward updated: evaluation would use them.
        if (auto bad = find_buffer_anomaly(graph, parameters, "forward")) {
          bad->tensor = "updated " + bad->tensor;
          throw Error(where() + ": " + describe(*bad) + "; training stopped" + checkpoint_intact);
        }
      }
      ++step;
      epoch_total += result;
      // The run's last step (max_steps) ends the epoch.
      const bool last_step = b + 1 == batches || step == total_steps;
      // The epoch's last step is evaluated and saved with the epoch.
      if (options.eval_every > 0 && step % options.eval_every == 0 && !last_step) {
        const auto evaluation_start = Clock::now();
        const StepResult test_total =
            evaluate_test_split("after step " + std::to_string(step) + " (epoch " + std::to_string(epoch + 1) + ")");
        EvaluationReport evaluation;
        evaluation.epoch = epoch + 1;
        evaluation.batch = b + 1;
        evaluation.batches = batches;
        evaluation.step = step;
        evaluation.test_loss = test_total.mean_loss();
        evaluation.test_accuracy = accuracy_of(test_total);
        evaluation.learning_rate = learning_rate;
        evaluation.seconds = seconds_since(evaluation_start);
        evaluation.reached_target = reaches_target(evaluation.test_accuracy);
        evaluation_seconds += evaluation.seconds;
        observer.on_evaluation(evaluation);
        if (evaluation.reached_target) {
          stopping_evaluation = test_total;
          last_batch = b + 1;
          break;
        }
      }
      if (!options.save.empty() && options.save_every > 0 && step % options.save_every == 0 && !last_step) {
        save_checkpoint(epoch);
      }

      BatchProgress progress;
      progress.epoch = epoch + 1;
      progress.epochs = epochs;
      progress.batch = b + 1;
      progress.batches = batches;
      progress.loss = epoch_total.mean_loss();
      const double elapsed = seconds_since(start) - evaluation_seconds;
      progress.images_per_second = static_cast<double>(epoch_total.samples) / elapsed;
      progress.eta_seconds = elapsed / static_cast<double>(b + 1 - start_batch) * static_cast<double>(batches - b - 1);
      observer.on_batch(progress);
      if (step == total_steps) {
        last_batch = b + 1;
        break;
      }
    }
    const double train_seconds = seconds_since(start) - evaluation_seconds;
    const bool whole_epoch = last_batch == batches;
    const StepResult test_total = stopping_evaluation ? *stopping_evaluation
                                                      : evaluate_test_split(whole_epoch ? "after epoch " + std::to_string(epoch + 1)
                                                                                        : "after step " + std::to_string(step));

    EpochReport report;
    report.epoch = epoch + 1;
    report.batch = last_batch;
    report.batches = batches;
    report.step = step;
    report.learning_rate = learning_rate;
    report.train_loss = epoch_total.mean_loss();
    report.train_accuracy = accuracy_of(epoch_total);
    report.test_loss = test_total.mean_loss();
    report.test_accuracy = accuracy_of(test_total);
    report.reached_target = reaches_target(report.test_accuracy);
    report.seconds = seconds_since(start);
    report.images_per_second = static_cast<double>(epoch_total.samples) / train_seconds;

    if (!options.save.empty()) save_checkpoint(whole_epoch ? epoch + 1 : epoch);
    if (log.is_open()) {
      log << report.epoch << ',' << report.step << ',' << report.learning_rate << ',' << report.train_loss << ','
          << report.train_accuracy << ',' << report.test_loss << ',' << report.test_accuracy << ',' << report.seconds
          << ',' << report.images_per_second << '\n';
      log.flush();
    }
    observer.on_epoch(report);
    reports.push_back(report);
    if (report.reached_target) break;
  }
  return reports;
}

}  // namespace

std::vector<EpochReport> train(const TrainOptions& options, TrainingObserver& observer) {
  const std::unique_ptr<Communicator> world = world_communicator(options.mpi_timeout, options.mpi_overlap);
  if (world->size() == 1) return train_on(options, observer, *world);
  // One rank's error would leave the others waiting in a collective: it stops them all.
  try {
    return train_on(options, observer, *world);
  } catch (const std::exception& e) {
    world->abort(e.what());
  }
}

}  // namespace ember
