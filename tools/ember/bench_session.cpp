#include "tools/ember/bench_session.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <latch>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/process_memory.h"
#include "engine/session.h"
#include "engine/text.h"
#include "simd/dispatch.h"

namespace ember::cli {
namespace {

std::unique_ptr<InferenceSession> open_session(const Flags& flags, const SessionOptions& options) {
  if (flags.on("checkpoint") && flags.on("model")) throw UsageError("ember bench: --checkpoint and --model: give one");
  if (flags.on("checkpoint")) return InferenceSession::open(flags.text("checkpoint"), options);
  const Json spec = load_model_spec(flags.text("model"));
  auto graph = std::make_unique<Graph>(graph_from_spec(spec, flags.text("model")));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(0);
  return std::make_unique<InferenceSession>(std::move(graph), std::move(parameters), options);
}

// The q-quantile (0..1) of `values`, which it reorders.
double quantile(std::vector<double>& values, double q) {
  if (values.empty()) return 0.0;
  const auto at = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at), values.end());
  return values[at];
}

}  // namespace

int bench_session(const Flags& flags) {
  const std::int64_t max_batch = flags.positive_integer("batch-size");
  const bool mixed = flags.on("mixed-batches");
  const int callers = static_cast<int>(flags.positive_integer("callers"));
  const std::int64_t calls = flags.positive_integer("calls");
  const std::int64_t warmup = flags.non_negative_integer("warmup");
  SessionOptions options;
  options.max_batch = max_batch;
  if (const std::int64_t micro_batch = flags.positive_integer_or_auto("micro-batch"); micro_batch > 0) {
    options.micro_batch = micro_batch;  // auto: the session's default
  }
  options.threads = static_cast<int>(flags.positive_integer("threads"));
  // Warm calls make no workspace: a caller holds up to one per thread it is given.
  options.workspaces = std::max(callers, options.threads);
  const std::unique_ptr<InferenceSession> session = open_session(flags, options);
  const std::int64_t in = session->input_sample_elements(), out = session->output_sample_elements();

  // Each caller: its own random inputs and its own seeded batch sizes (all max_batch
  // unless --mixed-batches), its call latencies in seconds and its images.
  struct Caller {
    std::vector<float> input, output;
    std::vector<std::int64_t> batches;
    std::vector<double> latencies;
    std::int64_t images = 0;
  };
  std::vector<Caller> state(static_cast<std::size_t>(callers));
  for (int c = 0; c < callers; ++c) {
    Caller& caller = state[static_cast<std::size_t>(c)];
    std::mt19937 random(static_cast<unsigned>(c) + 1);
    std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
    std::uniform_int_distribution<std::int64_t> size(1, max_batch);
    caller.input.resize(static_cast<std::size_t>(max_batch * in));
    for (float& x : caller.input) x = pixel(random);
    caller.output.resize(static_cast<std::size_t>(max_batch * out));
    caller.batches.resize(static_cast<std::size_t>(warmup + calls), max_batch);
    if (mixed) {
      for (std::int64_t& b : caller.batches) b = size(random);
    }
    caller.latencies.reserve(static_cast<std::size_t>(calls));
  }

  std::latch warm(callers + 1), go(1);
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      Caller& caller = state[static_cast<std::size_t>(c)];
      for (std::int64_t i = 0; i < warmup; ++i) {
        session->run(caller.input.data(), caller.batches[static_cast<std::size_t>(i)], caller.output.data());
      }
      warm.count_down();
      go.wait();
      for (std::int64_t i = warmup; i < warmup + calls; ++i) {
        const std::int64_t batch = caller.batches[static_cast<std::size_t>(i)];
        const auto start = std::chrono::steady_clock::now();
        session->run(caller.input.data(), batch, caller.output.data());
        caller.latencies.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        caller.images += batch;
      }
    });
  }
  warm.arrive_and_wait();
  const std::size_t resident_before = resident_bytes();
  const auto start = std::chrono::steady_clock::now();
  go.count_down();
  for (std::thread& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::size_t resident_after = resident_bytes();

  std::vector<double> latencies;
  std::int64_t images = 0;
  for (const Caller& caller : state) {
    latencies.insert(latencies.end(), caller.latencies.begin(), caller.latencies.end());
    images += caller.images;
  }
  const double total_calls = static_cast<double>(latencies.size());
  const double p50_ms = 1e3 * quantile(latencies, 0.50), p99_ms = 1e3 * quantile(latencies, 0.99);
  const std::string model = flags.on("checkpoint") ? flags.text("checkpoint") : flags.text("model");
  const std::string batches = mixed ? "1.." + std::to_string(max_batch) : std::to_string(max_batch);
  const std::string isa(simd::isa_name(simd::selected_isa()));
  if (flags.on("json")) {
    std::printf("{\"framework\": \"ember\", \"model\": \"%s\", \"mode\": \"session\", \"threads\": %d, \"callers\": %d, "
                "\"calls\": %lld, "
                "\"batch\": \"%s\", \"calls_per_s\": %.2f, \"img_per_s\": %.2f, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
                "\"resident_before_bytes\": %zu, \"resident_after_bytes\": %zu, \"workspaces\": %zu, \"isa\": \"%s\"}\n",
                model.c_str(), options.threads, callers, static_cast<long long>(calls), batches.c_str(),
                total_calls / seconds, static_cast<double>(images) / seconds, p50_ms, p99_ms, resident_before, resident_after,
                session->workspace_count(), isa.c_str());
  } else {
    std::printf("%s session, %d thread(s), %d caller(s) x %lld calls, batch %s: %.1f calls/s, %.1f img/s; latency p50 %.3f ms, "
                "p99 %.3f ms; resident %.1f MiB before, %.1f MiB after (%+.2f MiB); %zu workspaces; %s kernels\n",
                model.c_str(), options.threads, callers, static_cast<long long>(calls), batches.c_str(), total_calls / seconds,
                static_cast<double>(images) / seconds, p50_ms, p99_ms, mebibytes(resident_before),
                mebibytes(resident_after), mebibytes(resident_after) - mebibytes(resident_before),
                session->workspace_count(), isa.c_str());
  }
  return 0;
}

}  // namespace ember::cli
