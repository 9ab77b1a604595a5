// The inference session servers embed: concurrent callers with mixed batch sizes get
// bitwise the outputs one caller gets, memory stays bounded whatever batch sizes arrive,
// and bad calls and bad checkpoints fail with an ember::Error that names the problem. The
// tsan preset runs these tests under ThreadSanitizer.
#include "engine/session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <random>
#include <thread>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/process_memory.h"
#include "engine/training_state.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

using testing::contains;
using testing::error_of;

std::unique_ptr<InferenceSession> make_session(const std::string& model, std::int64_t max_batch, std::int64_t micro_batch = 4,
                                               int threads = 1) {
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(model)));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(3);
  SessionOptions options;
  options.max_batch = max_batch;
  options.micro_batch = micro_batch;
  options.threads = threads;
  return std::make_unique<InferenceSession>(std::move(graph), std::move(parameters), options);
}

// A real checkpoint of a built-in model with initialized weights, written by the engine's
// save function.
void write_checkpoint(const std::string& model, const std::string& file) {
  const Graph graph = graph_from_spec(builtin_model_spec(model));
  ParameterStore parameters(graph);
  parameters.initialize(4);
  const auto optimizer = make_optimizer("sgd", OptimizerOptions{}, parameters);
  TrainingState state;
  state.model_spec = spec_from_graph(graph, model);
  state.optimizer = {{"name", std::string(optimizer->name())}, {"learning_rate", optimizer->learning_rate()}};
  state.run = {{"seed", 4}, {"data", "synthetic"}};
  save_training_state(file, state, parameters, *optimizer);
}

std::vector<float> random_inputs(std::size_t count, unsigned seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  std::vector<float> input(count);
  for (float& x : input) x = value(random);
  return input;
}

// Bits, not float ==: a NaN equals nothing and -0.0 equals 0.0, and either can be what a
// call that read another call's memory returns.
bool same_bits(const float* a, const float* b, std::int64_t count) {
  return std::memcmp(a, b, static_cast<std::size_t>(count) * sizeof(float)) == 0;
}

// Calls per thread: EMBER_TEST_SESSION_CALLS sets it where a call is slow (the tsan preset
// sets it: ThreadSanitizer makes a call ~20x slower).
int calls_per_thread(int default_calls) {
  const char* text = std::getenv("EMBER_TEST_SESSION_CALLS");
  const int calls = text != nullptr ? std::atoi(text) : default_calls;
  return calls > 0 ? calls : default_calls;
}

// The most calls the callers had in flight at once, as the callers see it: it proves they
// called at the same time. That the session also ran calls at the same time is
// workspace_count() > 1, as a call makes a workspace only when every other one is in use.
class CallsInFlight {
 public:
  void enter() {
    const int now = ++now_;
    int most = most_.load();
    while (now > most && !most_.compare_exchange_weak(most, now)) {
    }
  }
  void leave() { --now_; }
  int most() const { return most_.load(); }

 private:
  std::atomic<int> now_{0};
  std::atomic<int> most_{0};
};

class InferenceSessionTest : public ::testing::TestWithParam<const char*> {};

TEST_P(InferenceSessionTest, ConcurrentCallersGetTheOutputsOfOneCaller) {
  constexpr std::int64_t max_batch = 16;  // micro-batch 4: programs for 1..4, a call runs up to 4 of them
  const auto session = make_session(GetParam(), max_batch);
  const std::int64_t out = session->output_sample_elements();
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(max_batch * session->input_sample_elements()), 1);
  // One caller's outputs for every batch size.
  std::vector<std::vector<float>> expected(max_batch + 1);
  for (std::int64_t b = 1; b <= max_batch; ++b) {
    expected[static_cast<std::size_t>(b)].resize(static_cast<std::size_t>(b * out));
    session->run(input.data(), b, expected[static_cast<std::size_t>(b)].data());
  }
  constexpr int threads = 8;
  const int calls = calls_per_thread(500);
  std::vector<int> mismatches(threads, 0);
  std::latch start(threads);  // no caller calls before every caller is running
  CallsInFlight in_flight;
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      std::vector<float> output(static_cast<std::size_t>(max_batch * out));
      start.arrive_and_wait();
      for (int c = 0; c < calls; ++c) {
        const std::int64_t b = 1 + (t * 5 + c * 7) % max_batch;
        in_flight.enter();
        session->run(input.data(), b, output.data());
        in_flight.leave();
        if (!same_bits(output.data(), expected[static_cast<std::size_t>(b)].data(), b * out)) {
          ++mismatches[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(mismatches, std::vector<int>(threads, 0)) << calls << " calls per thread";
  EXPECT_GT(in_flight.most(), 1) << "the callers never called at the same time";
  EXPECT_GT(session->workspace_count(), 1u) << "the session never ran two calls at the same time";
  EXPECT_LE(session->workspace_count(), static_cast<std::size_t>(threads));
}

// A call given more threads spreads its micro-batches over them, or at one micro-batch
// gives them to its layers: neither may change a bit of the result.
class InferenceSessionThreads : public ::testing::TestWithParam<const char*> {};

TEST_P(InferenceSessionThreads, EveryThreadBudgetGivesTheBitsOfOneThread) {
  constexpr std::int64_t max_batch = 16;
  const auto one = make_session(GetParam(), max_batch);
  const std::int64_t out = one->output_sample_elements();
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(max_batch * one->input_sample_elements()), 2);
  for (const int threads : {2, 3}) {
    const auto session = make_session(GetParam(), max_batch, 4, threads);
    for (const std::int64_t batch : {1, 3, 4, 9, 16}) {
      std::vector<float> expected(static_cast<std::size_t>(batch * out)), found(expected.size());
      one->run(input.data(), batch, expected.data());
      session->run(input.data(), batch, found.data());
      EXPECT_TRUE(same_bits(expected.data(), found.data(), batch * out)) << threads << " threads, batch " << batch;
    }
  }
}

// Callers of a session with a budget of two threads, four at once: each gets what one
// caller alone gets (ThreadSanitizer runs this too).
TEST_P(InferenceSessionThreads, ConcurrentCallersShareTheThreadBudget) {
  constexpr std::int64_t max_batch = 16;
  const auto session = make_session(GetParam(), max_batch, 4, 2);
  const std::int64_t out = session->output_sample_elements();
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(max_batch * session->input_sample_elements()), 5);
  std::vector<std::vector<float>> expected(max_batch + 1);
  for (std::int64_t b = 1; b <= max_batch; ++b) {
    expected[static_cast<std::size_t>(b)].resize(static_cast<std::size_t>(b * out));
    session->run(input.data(), b, expected[static_cast<std::size_t>(b)].data());
  }
  constexpr int callers = 4;
  const int calls = calls_per_thread(100);
  std::vector<int> mismatches(callers, 0);
  std::latch start(callers);
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> output(static_cast<std::size_t>(max_batch * out));
      start.arrive_and_wait();
      for (int c = 0; c < calls; ++c) {
        const std::int64_t b = 1 + (t * 3 + c * 5) % max_batch;
        session->run(input.data(), b, output.data());
        if (!same_bits(output.data(), expected[static_cast<std::size_t>(b)].data(), b * out)) ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(callers, 0));
}

// A lone micro-batch with every thread of the budget runs its big layers' parts (GEMM
// tiles, attention heads) on the session's workers (engine/worker_pool.h), not in an
// OpenMP team: the same bits as one thread, alone and with callers competing for the
// workers. No OpenMP team opens here, so ThreadSanitizer (the tsan preset) checks the
// workers too.
class InferenceSessionWorkers : public ::testing::TestWithParam<const char*> {};

TEST_P(InferenceSessionWorkers, OneMicroBatchOnTheWorkersGivesTheBitsOfOneThread) {
  constexpr std::int64_t batch = 4;
  const auto one = make_session(GetParam(), batch, batch);
  const auto two = make_session(GetParam(), batch, batch, 2);
  const std::int64_t out = one->output_sample_elements();
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(batch * one->input_sample_elements()), 7);
  std::vector<std::vector<float>> expected(batch + 1);
  for (std::int64_t b = 1; b <= batch; ++b) {
    expected[static_cast<std::size_t>(b)].resize(static_cast<std::size_t>(b * out));
    one->run(input.data(), b, expected[static_cast<std::size_t>(b)].data());
    std::vector<float> found(static_cast<std::size_t>(b * out));
    two->run(input.data(), b, found.data());
    EXPECT_TRUE(same_bits(expected[static_cast<std::size_t>(b)].data(), found.data(), b * out)) << "batch " << b;
  }
  constexpr int callers = 3;
  const int calls = calls_per_thread(50);
  std::vector<int> mismatches(callers, 0);
  std::latch start(callers);
  std::vector<std::thread> threads;
  for (int t = 0; t < callers; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> output(static_cast<std::size_t>(batch * out));
      start.arrive_and_wait();
      for (int c = 0; c < calls; ++c) {
        const std::int64_t b = 1 + (t + c) % batch;
        two->run(input.data(), b, output.data());
        if (!same_bits(output.data(), expected[static_cast<std::size_t>(b)].data(), b * out)) ++mismatches[static_cast<std::size_t>(t)];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(callers, 0));
}

TEST_P(InferenceSessionTest, MemoryStaysBoundedWhenBatchSizesVary) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "resident memory includes the sanitizer's shadow memory and quarantine";
#endif
  constexpr std::int64_t max_batch = 64, cycles = 10;
  const auto session = make_session(GetParam(), max_batch, 16);
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(max_batch * session->input_sample_elements()), 2);
  std::vector<float> output(static_cast<std::size_t>(max_batch * session->output_sample_elements()));
  std::size_t settled = 0;
  for (std::int64_t cycle = 0; cycle < cycles; ++cycle) {
    if (cycle == 2) settled = resident_bytes();
    for (std::int64_t b = 1; b <= max_batch; ++b) session->run(input.data(), b, output.data());
  }
  const std::size_t end = resident_bytes();
  const std::ptrdiff_t growth = static_cast<std::ptrdiff_t>(end) - static_cast<std::ptrdiff_t>(settled);
  std::printf("resident after 2 cycles %zu KiB, after %lld cycles %zu KiB\n", settled / 1024, static_cast<long long>(cycles),
              end / 1024);
  EXPECT_LT(growth, std::ptrdiff_t{1} << 20) << "resident memory grew by " << growth << " bytes";
  EXPECT_EQ(session->workspace_count(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionTest, ::testing::Values("seed-cnn", "attn-cnn"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionWorkers, ::testing::Values("seed-cnn", "attn-cnn", "attention-mse"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionThreads,
                         ::testing::Values("seed-cnn", "lenet", "attn-cnn", "resnet", "attention-mse"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// A server's day in miniature: 8 callers x EMBER_TEST_SESSION_CALLS calls of seeded mixed
// batch sizes on one session opened from a checkpoint. Every call's output is bitwise
// what one caller got for the same input, the output past the batch is left alone, and
// once warm the process's resident memory stays flat.
struct SoakCase {
  const char* model;
  int calls;  // per caller, unless EMBER_TEST_SESSION_CALLS says otherwise
};

// attn-cnn computes ~6x more per image than seed-cnn: fewer calls keep its wall time near
// seed-cnn's. A sanitizer or -O0 makes a call many times slower.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || !defined(NDEBUG)
constexpr SoakCase soak_cases[] = {{"seed-cnn", 250}, {"attn-cnn", 50}};
#else
constexpr SoakCase soak_cases[] = {{"seed-cnn", 5000}, {"attn-cnn", 1000}};
#endif

void PrintTo(const SoakCase& soak, std::ostream* out) { *out << soak.model << ", by default " << soak.calls << " calls a caller"; }

class InferenceSessionSoak : public testing::TempDirectoryTest, public ::testing::WithParamInterface<SoakCase> {};

// One call's input (samples [first_sample, first_sample + batch) of a pool) and the output
// a single caller got for it.
struct Request {
  std::int64_t first_sample = 0, batch = 0;
  std::vector<float> expected;
};

// Mostly the small batches a server sees, and one in eight up to max_batch (several
// micro-batches: 37 = 16 + 16 + 5); 6 to 8 samples a call on average keep the wall time
// short.
std::int64_t soak_batch(std::mt19937& random, std::int64_t max_batch) {
  const std::int64_t largest = random() % 8 == 0 ? max_batch : 4;
  return std::uniform_int_distribution<std::int64_t>(1, largest)(random);
}

TEST_P(InferenceSessionSoak, ManyCallersManyCallsSameBitsFlatMemory) {
  constexpr std::int64_t max_batch = 64, micro_batch = 16, pool_samples = 96;
  constexpr int threads = 8, request_count = 64;
  const char* model = GetParam().model;
  const int calls = calls_per_thread(GetParam().calls);
  const int warmup_calls = calls / 10;
  const std::string checkpoint = path("model.safetensors");
  write_checkpoint(model, checkpoint);
  SessionOptions options;
  options.max_batch = max_batch;
  options.micro_batch = micro_batch;
  const auto session = InferenceSession::open(checkpoint, options);
  const std::int64_t in = session->input_sample_elements(), out = session->output_sample_elements();
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(pool_samples * in), 8);

  std::mt19937 random(9);
  std::vector<Request> requests(request_count);
  for (Request& request : requests) {
    request.batch = soak_batch(random, max_batch);
    request.first_sample = std::uniform_int_distribution<std::int64_t>(0, pool_samples - request.batch)(random);
    request.expected.resize(static_cast<std::size_t>(request.batch * out));
    session->run(input.data() + request.first_sample * in, request.batch, request.expected.data());
  }

  // A NaN with a payload no layer computes: what the session must leave past the batch.
  constexpr std::uint32_t untouched_bits = 0x7fc0beefu;
  float untouched;
  std::memcpy(&untouched, &untouched_bits, sizeof untouched);
  const std::vector<float> untouched_output(static_cast<std::size_t>(max_batch * out), untouched);

  std::vector<int> mismatches(threads, 0);
  std::vector<std::int64_t> images(threads, 0);
  std::latch start(threads), warm(threads + 1), measured(1);
  CallsInFlight in_flight;
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      std::mt19937 pick(100 + static_cast<unsigned>(t));
      std::uniform_int_distribution<int> which(0, request_count - 1);
      std::vector<float> output(untouched_output.size());
      start.arrive_and_wait();
      for (int c = 0; c < calls; ++c) {
        if (c == warmup_calls) {
          warm.count_down();
          measured.wait();
        }
        const Request& request = requests[static_cast<std::size_t>(which(pick))];
        output = untouched_output;
        in_flight.enter();
        session->run(input.data() + request.first_sample * in, request.batch, output.data());
        in_flight.leave();
        const std::int64_t written = request.batch * out;
        if (!same_bits(output.data(), request.expected.data(), written) ||
            !same_bits(output.data() + written, untouched_output.data(), max_batch * out - written)) {
          ++mismatches[static_cast<std::size_t>(t)];
        }
        images[static_cast<std::size_t>(t)] += request.batch;
      }
    });
  }
  const auto started = std::chrono::steady_clock::now();
  warm.arrive_and_wait();
  const std::size_t warm_resident = resident_bytes();
  const std::size_t warm_workspaces = session->workspace_count();
  const auto warmed = std::chrono::steady_clock::now();
  measured.count_down();
  for (std::thread& caller : callers) caller.join();
  const auto ended = std::chrono::steady_clock::now();
  const std::size_t end_resident = resident_bytes();

  const double seconds = std::chrono::duration<double>(ended - started).count();
  const double measured_seconds = std::chrono::duration<double>(ended - warmed).count();
  std::int64_t total_images = 0;
  for (std::int64_t count : images) total_images += count;
  const double total_calls = static_cast<double>(threads) * calls;
  const std::ptrdiff_t growth = static_cast<std::ptrdiff_t>(end_resident) - static_cast<std::ptrdiff_t>(warm_resident);
  // A workspace first needed after the warm-up (a short run may not reach 8 calls at once
  // in it) brings its arena: bounded by the callers, not a leak.
  const std::size_t late_workspaces = session->workspace_count() - warm_workspaces;
  [[maybe_unused]] const std::ptrdiff_t allowed =
      (std::ptrdiff_t{2} << 20) + static_cast<std::ptrdiff_t>(late_workspaces * session->arena_bytes());
  std::printf("%s: %d callers x %d calls (%.1f images a call) in %.2f s: %.0f calls/s, %.0f images/s\n"
              "resident after %d warm-up calls a caller %zu KiB, at the end %zu KiB (%+td KiB over %.2f s); "
              "workspaces %zu then %zu (arena %zu KiB each); at most %d calls in flight\n",
              model, threads, calls, static_cast<double>(total_images) / total_calls, seconds, total_calls / seconds,
              static_cast<double>(total_images) / seconds, warmup_calls, warm_resident / 1024, end_resident / 1024,
              growth / 1024, measured_seconds, warm_workspaces, session->workspace_count(), session->arena_bytes() / 1024,
              in_flight.most());

  EXPECT_EQ(mismatches, std::vector<int>(threads, 0)) << "calls whose output differed from one caller's or that wrote "
                                                          "past the batch, of " << calls << " per thread";
  EXPECT_GT(in_flight.most(), 1) << "the callers never called at the same time";
  EXPECT_GT(session->workspace_count(), 1u) << "the session never ran two calls at the same time";
  EXPECT_LE(session->workspace_count(), static_cast<std::size_t>(threads));
  // Not under a sanitizer: its shadow memory and quarantine are resident memory too.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LT(growth, allowed) << "resident memory grew by " << growth << " bytes after warm-up, " << late_workspaces
                             << " workspaces made since";
#endif
}

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionSoak, ::testing::ValuesIn(soak_cases),
                         [](const ::testing::TestParamInfo<SoakCase>& info) {
                           std::string name = info.param.model;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// A session folds each BatchNorm into the convolution before it; its outputs are the
// executor's, which runs the BatchNorms unfolded in inference mode, to float rounding.
// Running statistics other than 0 and 1 make the fold do something.
TEST(InferenceSession, FoldsBatchNormIntoTheConvolutionsAndKeepsTheOutputs) {
  const Graph graph = graph_from_spec(builtin_model_spec("resnet"));
  auto parameters = std::make_unique<ParameterStore>(graph);
  parameters->initialize(3);
  // Statistics a trained network could have: means around 0 (larger ones would leave
  // every ReLU at 0 and the logits at the head's bias, whatever was folded).
  std::mt19937 random(5);
  std::uniform_real_distribution<float> mean(-0.2f, 0.2f), variance(0.5f, 1.5f);
  for (const ParameterEntry& entry : parameters->buffer_entries()) {
    const bool is_mean = entry.name.ends_with(".running_mean"), is_variance = entry.name.ends_with(".running_var");
    float* values = parameters->buffers().data() + entry.offset;
    for (std::int64_t c = 0; (is_mean || is_variance) && c < entry.spec.shape.elements(); ++c) {
      values[c] = is_mean ? mean(random) : variance(random);
    }
  }
  const std::int64_t batch = 6;
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(batch * 28 * 28), 8);
  std::vector<float> expected(static_cast<std::size_t>(batch * 10));
  Executor executor(graph, *parameters, ExecutorOptions{});
  executor.infer(input.data(), batch, expected.data());

  auto session_graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec("resnet")));
  SessionOptions options;
  options.max_batch = batch;
  const InferenceSession session(std::move(session_graph), std::move(parameters), options);
  std::vector<float> output(expected.size());
  session.run(input.data(), batch, output.data());
  double largest = 0.0, difference = 0.0;
  for (std::size_t i = 0; i < output.size(); ++i) {
    largest = std::max(largest, std::fabs(static_cast<double>(expected[i])));
    difference = std::max(difference, std::fabs(static_cast<double>(output[i]) - expected[i]));
  }
  EXPECT_LE(difference, 1e-4 * largest) << "largest logit " << largest;
  EXPECT_FALSE(same_bits(output.data(), expected.data(), batch * 10)) << "nothing was folded";
}

TEST(InferenceSession, BadBatchSizesAreRefusedWithTheLimits) {
  const auto session = make_session("seed-cnn", 8);
  std::vector<float> input(static_cast<std::size_t>(9 * session->input_sample_elements()));
  std::vector<float> output(static_cast<std::size_t>(9 * session->output_sample_elements()));
  for (std::int64_t batch : {0, -1, 9}) {
    try {
      session->run(input.data(), batch, output.data());
      ADD_FAILURE() << "batch " << batch << " was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::to_string(batch)), std::string::npos) << message;
      EXPECT_NE(message.find("8"), std::string::npos) << message;
    }
  }
}

TEST(InferenceSession, ShapedRunChecksTheInputShapeAndBufferSizes) {
  const auto session = make_session("seed-cnn", 8);  // input (batch, 1, 28, 28), output 10 per sample
  const std::vector<float> input = random_inputs(static_cast<std::size_t>(3 * 784), 3);
  std::vector<float> output(30), expected(30);
  session->run(input.data(), 3, expected.data());
  session->run(input, Shape{3, 1, 28, 28}, output);
  EXPECT_EQ(output, expected);

  struct Case {
    Shape shape;
    std::size_t input_floats, output_floats;
    std::vector<std::string> named;  // what the message must name
  };
  const std::vector<Case> cases{
      {Shape{3, 28, 28}, 3 * 784, 30, {"(3, 28, 28)", "(batch, 1, 28, 28)"}},
      {Shape{3, 3, 28, 28}, 3 * 784, 30, {"(3, 3, 28, 28)", "(batch, 1, 28, 28)"}},
      {Shape{3, 1, 28, 27}, 3 * 784, 30, {"(3, 1, 28, 27)", "(batch, 1, 28, 28)"}},
      {Shape{9, 1, 28, 28}, 3 * 784, 30, {"(9, 1, 28, 28)", "1 to 8"}},
      {Shape{0, 1, 28, 28}, 3 * 784, 30, {"(0, 1, 28, 28)", "1 to 8"}},
      {Shape{3, 1, 28, 28}, 2 * 784, 30, {"(3, 1, 28, 28)", "2352", "1568"}},
      {Shape{2, 1, 28, 28}, 3 * 784, 30, {"(2, 1, 28, 28)", "1568", "2352"}},
      {Shape{3, 1, 28, 28}, 3 * 784, 29, {"30", "29"}},
  };
  for (const Case& c : cases) {
    const std::string message = error_of([&] {
      session->run(std::span<const float>(input.data(), c.input_floats), c.shape, std::span<float>(output.data(), c.output_floats));
    });
    for (const std::string& part : c.named) EXPECT_TRUE(contains(message, part)) << c.shape.str() << ": " << message;
  }
}

class InferenceSessionCheckpoint : public testing::TempDirectoryTest {
 protected:
  std::string write_checkpoint() {
    const std::string file = path("model.safetensors");
    ember::write_checkpoint("seed-cnn", file);
    return file;
  }

  // open() must fail with an ember::Error that names the file; never crash.
  void expect_refused(const std::string& file, const std::string& what) {
    const std::string message = error_of([&] { (void)InferenceSession::open(file); });
    EXPECT_TRUE(contains(message, file)) << what << ": " << message;
    EXPECT_FALSE(testing::starts_with(message, "not an ember::Error")) << what << ": " << message;
    EXPECT_NE(message, "no error") << what;
  }
};

TEST_F(InferenceSessionCheckpoint, OpensAGoodCheckpoint) {
  const std::string file = write_checkpoint();
  const auto session = InferenceSession::open(file, SessionOptions{4, 2, 1});
  const std::vector<float> input = random_inputs(4 * 784, 5);
  std::vector<float> output(40, -1.0f);
  session->run(input.data(), 4, output.data());
  EXPECT_TRUE(std::all_of(output.begin(), output.end(), [](float x) { return std::isfinite(x) && x != -1.0f; }));
}

TEST_F(InferenceSessionCheckpoint, TruncatedCheckpointsAreRefusedNamingTheFile) {
  const testing::Bytes whole = testing::read_file(write_checkpoint());
  ASSERT_GT(whole.size(), 16u);
  const std::size_t header_end = 8 + testing::header_length_of(whole);
  ASSERT_LT(header_end, whole.size());
  for (std::size_t length : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9}, header_end / 2,
                             header_end - 1, header_end, header_end + 1, (header_end + whole.size()) / 2, whole.size() - 1}) {
    const std::string file = path("truncated-" + std::to_string(length) + ".safetensors");
    testing::write_file(file, testing::Bytes(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(length)));
    expect_refused(file, "truncated to " + std::to_string(length) + " of " + std::to_string(whole.size()) + " bytes");
  }
}

TEST_F(InferenceSessionCheckpoint, GarbageAndMissingFilesAreRefusedNamingTheFile) {
  std::mt19937 random(6);
  testing::Bytes garbage(4096);
  for (auto& byte : garbage) byte = static_cast<std::uint8_t>(random());
  testing::write_file(path("garbage.safetensors"), garbage);
  expect_refused(path("garbage.safetensors"), "random bytes");

  // A plausible header length, then not JSON.
  testing::Bytes not_json{16, 0, 0, 0, 0, 0, 0, 0};
  for (char c : std::string("not a header, no")) not_json.push_back(static_cast<std::uint8_t>(c));
  testing::write_file(path("not_json.safetensors"), not_json);
  expect_refused(path("not_json.safetensors"), "a header that is not JSON");

  expect_refused(path("missing.safetensors"), "a missing file");
}

}  // namespace
}  // namespace ember
