#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/anomaly.h"
#include "engine/dataset.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/profile.h"
#include "engine/synthetic_task.h"
#include "simd/dispatch.h"
#include "tools/ember/bench_session.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {
namespace {

// Threads of this process right now (/proc/self/task), to show the thread budget holds.
int process_threads() {
  int count = 0;
  if (DIR* dir = opendir("/proc/self/task")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
  }
  return count;
}

// Step times, sorted: the median, and the spread as (p90 - p10) / median, which one slow
// step (a page fault, a neighbour) does not move as it moves the mean.
struct StepTimes {
  double median_ms = 0.0, p10_ms = 0.0, p90_ms = 0.0, min_ms = 0.0, max_ms = 0.0;
  double spread() const { return median_ms > 0.0 ? (p90_ms - p10_ms) / median_ms : 0.0; }
};

StepTimes summarize(std::vector<double> milliseconds) {
  std::sort(milliseconds.begin(), milliseconds.end());
  const std::size_t n = milliseconds.size();
  auto at = [&](double q) {  // linear interpolation between order statistics, as numpy's default
    const double position = q * static_cast<double>(n - 1);
    const auto below = static_cast<std::size_t>(position);
    const std::size_t above = std::min(below + 1, n - 1);
    return milliseconds[below] + (position - static_cast<double>(below)) * (milliseconds[above] - milliseconds[below]);
  };
  return StepTimes{at(0.5), at(0.1), at(0.9), milliseconds.front(), milliseconds.back()};
}

}  // namespace

int bench_command(int argc, char** argv) {
  Flags flags("bench", "Measure a model's training-step or inference throughput (images per second).");
  flags.model()
      .value("batch-size", "samples per step (with --session: per call, the most)", "64", "B")
      .toggle("training", "time full training steps (forward, loss, backward, Adam update)")
      .toggle("session", "time concurrent callers of one InferenceSession, as a server: calls/s, latency, memory")
      .value("checkpoint", "with --session: a checkpoint (ember train --save) instead of --model with fresh weights", "", "FILE")
      .value("callers", "with --session: threads calling the session at once", "8", "N")
      .value("calls", "with --session: timed calls per caller", "1000", "N")
      .toggle("mixed-batches", "with --session: each call's batch size drawn (seeded) from 1..B")
      .value("threads", "compute threads (with --session: the session's budget, shared by its callers)", "1", "N")
      .value("micro-batch", "samples a thread carries at once (auto: as ember train chooses; with --session or without --training, 16)", "auto", "N")
      .value("data", "real batches from this dataset's training split (in order), or attention-retrieval (synthetic), instead of random inputs", "", "D")
      .value("steps", "timed steps", "50", "N")
      .value("warmup", "untimed steps (with --session: calls per caller) first", "5", "N")
      .toggle("detect-anomaly", "time with the NaN/Inf checks of ember train --detect-anomaly on")
      .toggle("profile", "also time every op and phase of the timed steps: ms, GFLOP/s and GB/s against this machine's peaks, measured first")
      .toggle("json", "print one JSON line instead of text");
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const bool session = flags.on("session");
  for (const char* name : {"training", "data", "steps", "detect-anomaly", "profile"}) {
    if (session && flags.on(name)) throw UsageError(std::string("ember bench: --") + name + " does not go with --session");
  }
  for (const char* name : {"checkpoint", "callers", "calls", "mixed-batches"}) {
    if (!session && flags.on(name)) throw UsageError(std::string("ember bench: --") + name + " needs --session");
  }
  if (session) return bench_session(flags);
  const std::int64_t batch = flags.positive_integer("batch-size");
  const int threads = static_cast<int>(flags.positive_integer("threads"));
  const std::int64_t steps = flags.positive_integer("steps");
  const std::int64_t warmup = flags.non_negative_integer("warmup");
  const bool training = flags.on("training");
  const Json spec = load_model_spec(flags.text("model"));
  const Graph graph = graph_from_spec(spec, flags.text("model"));
  ParameterStore parameters(graph);
  parameters.initialize(0);
  const std::int64_t sample = graph.input_sample_shape().elements();
  const auto classes = static_cast<std::int32_t>(graph.value_shape(graph.output()).sample_elements());

  // The spec names its loss (attention-mse: MSE on regression targets); classification
  // otherwise.
  const std::unique_ptr<Loss> loss = make_loss(spec_loss_name(spec));

  // Batches: the first (warmup + steps) real batches in order, or random ones.
  const std::int64_t batch_count = warmup + steps;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<std::int32_t>> labels;
  std::vector<std::vector<float>> target_values;
  if (flags.has("data") && flags.text("data") == attention_retrieval_name) {
    const RegressionDataset data = make_attention_retrieval(batch * std::min<std::int64_t>(batch_count, 64), 1);
    if (data.sample_shape.elements() != sample || data.outputs != classes) {
      throw Error(std::string(attention_retrieval_name) + ": samples are " + data.sample_shape.str() + " -> " +
                  std::to_string(data.outputs) + ", the model takes " + graph.input_sample_shape().str() + " -> " +
                  std::to_string(classes));
    }
    RegressionLoader loader(data, batch, 0, /*shuffle=*/false);
    for (std::int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
      inputs.emplace_back(static_cast<std::size_t>(batch * sample));
      target_values.emplace_back(static_cast<std::size_t>(batch * classes));
      labels.emplace_back();
      loader.load(0, b, inputs.back().data(), target_values.back().data());
    }
  } else if (flags.has("data")) {
    const Dataset data = load_dataset(flags.text("data"), Split::train, 0);
    const ImageFormat format = image_format_for(graph.input_sample_shape(), data, 0.0, 1.0);
    BatchLoader loader(data, format, batch, 0, /*shuffle=*/false);
    for (std::int64_t b = 0; b < std::min(batch_count, loader.batches_per_epoch()); ++b) {
      inputs.emplace_back(static_cast<std::size_t>(batch * sample));
      labels.emplace_back(static_cast<std::size_t>(batch));
      loader.load(0, b, inputs.back().data(), labels.back().data());
    }
  } else {
    std::mt19937 random(1);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    std::uniform_int_distribution<std::int32_t> label(0, classes - 1);
    std::normal_distribution<float> value(0.0f, 1.0f);
    for (int b = 0; b < 4; ++b) {
      inputs.emplace_back(static_cast<std::size_t>(batch * sample));
      labels.emplace_back(static_cast<std::size_t>(batch));
      target_values.emplace_back(static_cast<std::size_t>(batch * classes));
      for (float& x : inputs.back()) x = pixel(random);
      for (std::int32_t& y : labels.back()) y = label(random);
      for (float& t : target_values.back()) t = value(random);
    }
  }
  if (!loss->uses_labels() && target_values.empty()) {
    throw Error("--data " + flags.text("data") + " has class labels, but " + flags.text("model") + " trains with " +
                std::string(loss->name()) + " on regression targets");
  }

  ExecutorOptions options;
  options.threads = threads;
  const std::int64_t micro_batch = flags.positive_integer_or_auto("micro-batch");
  options.micro_batch = micro_batch > 0 ? micro_batch
                        : training    ? auto_micro_batch(graph, parameters.total_floats(), batch)
                                      : ExecutorOptions{}.micro_batch;
  options.detect_anomaly = flags.on("detect-anomaly");
  Executor executor(graph, parameters, options);
  std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, parameters);
  std::vector<float> output(static_cast<std::size_t>(batch * classes));
  // The peaks first: their 192 MB pass would evict what the warmup steps brought in.
  const bool profiling = flags.on("profile");
  const MachinePeaks peaks = profiling ? measure_machine_peaks() : MachinePeaks{};
  StepProfile profile;
  StepProfile* step_profile = nullptr;  // set once the warmup is over
  auto run_step = [&](std::int64_t i) {
    const auto b = static_cast<std::size_t>(i) % inputs.size();
    const Targets targets = loss->uses_labels() ? Targets{labels[b], nullptr} : Targets{{}, target_values[b].data()};
    if (training) {
      executor.train_step(inputs[b].data(), batch, targets, *loss, static_cast<std::uint64_t>(i));
      {
        const ScopedWall wall(step_profile, WallPart::optimizer, optimizer->step_bytes());
        optimizer->step(threads);
      }
      if (options.detect_anomaly) {  // the check `ember train` makes after each update
        if (auto bad = find_parameter_anomaly(graph, parameters, parameters.values(), "optimizer", "")) {
          throw Error(describe(*bad));
        }
      }
    } else {
      executor.infer(inputs[b].data(), batch, output.data());
    }
  };
  for (std::int64_t i = 0; i < warmup; ++i) run_step(i);
  if (profiling) {
    step_profile = &profile;
    executor.profile_into(step_profile);
  }
  std::vector<double> step_ms(static_cast<std::size_t>(steps));
  const auto start = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) {
    const auto step_start = ScopedWall::now();
    run_step(warmup + i);
    const std::int64_t nanoseconds = ScopedWall::elapsed_nanoseconds(step_start);
    step_ms[static_cast<std::size_t>(i)] = static_cast<double>(nanoseconds) * 1e-6;
    if (step_profile != nullptr) step_profile->add_step(nanoseconds);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  executor.profile_into(nullptr);
  const double images_per_second = static_cast<double>(steps * batch) / seconds;
  const int threads_seen = process_threads();
  const StepTimes times = summarize(step_ms);

  if (flags.on("json")) {
    // img_per_s and ms_per_step: the mean over the timed steps, as before; compare.py
    // sizes its runs with ms_per_step and compares median_img_per_s.
    std::printf("{\"framework\": \"ember\", \"model\": \"%s\", \"mode\": \"%s\", \"threads\": %d, \"batch\": %lld, "
                "\"steps\": %lld, \"img_per_s\": %.2f, \"ms_per_step\": %.4f, \"median_ms_per_step\": %.4f, "
                "\"median_img_per_s\": %.2f, \"p10_ms_per_step\": %.4f, \"p90_ms_per_step\": %.4f, \"min_ms_per_step\": %.4f, "
                "\"max_ms_per_step\": %.4f, \"spread\": %.4f, \"threads_seen\": %d, \"isa\": \"%s\"",
                flags.text("model").c_str(), training ? "training" : "inference", threads, static_cast<long long>(batch),
                static_cast<long long>(steps), images_per_second, 1000.0 * seconds / static_cast<double>(steps), times.median_ms,
                static_cast<double>(batch) * 1000.0 / times.median_ms, times.p10_ms, times.p90_ms, times.min_ms, times.max_ms,
                times.spread(), threads_seen, std::string(simd::isa_name(simd::selected_isa())).c_str());
    if (profiling) std::printf(", \"profile\": %s", profile_json(make_profile_report(profile, peaks)).dump().c_str());
    std::printf("}\n");
  } else {
    std::printf("%s %s, batch %lld, %d thread(s): %.1f img/s (%.3f ms/step mean, %.3f median, spread %.1f%% p10-p90 of %lld "
                "steps; %d process threads; %s kernels)\n",
                flags.text("model").c_str(), training ? "training" : "inference", static_cast<long long>(batch), threads,
                images_per_second, 1000.0 * seconds / static_cast<double>(steps), times.median_ms, 100.0 * times.spread(),
                static_cast<long long>(steps), threads_seen, std::string(simd::isa_name(simd::selected_isa())).c_str());
    if (profiling) std::printf("\n%s", format_profile_table(make_profile_report(profile, peaks)).c_str());
  }
  return 0;
}

}  // namespace ember::cli
