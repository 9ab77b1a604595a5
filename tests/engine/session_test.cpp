// The inference session servers embed: concurrent callers with mixed batch sizes get
// bitwise the outputs one caller gets, and bad calls fail with a clear error. The tsan
// preset runs these tests under ThreadSanitizer.
#include "engine/session.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "engine/error.h"
#include "engine/model_spec.h"

namespace ember {
namespace {

std::unique_ptr<InferenceSession> make_session(const std::string& model, std::int64_t max_batch) {
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(model)));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(3);
  SessionOptions options;
  options.max_batch = max_batch;
  options.micro_batch = 4;
  return std::make_unique<InferenceSession>(std::move(graph), std::move(parameters), options);
}

class InferenceSessionTest : public ::testing::TestWithParam<const char*> {};

TEST_P(InferenceSessionTest, ConcurrentCallersGetTheOutputsOfOneCaller) {
  constexpr std::int64_t max_batch = 9;
  const auto session = make_session(GetParam(), max_batch);
  const std::int64_t in = session->input_sample_elements(), out = session->output_sample_elements();
  std::mt19937 random(1);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  std::vector<float> input(static_cast<std::size_t>(max_batch * in));
  for (float& x : input) x = value(random);
  // One caller's outputs for every batch size.
  std::vector<std::vector<float>> expected(max_batch + 1);
  for (std::int64_t b = 1; b <= max_batch; ++b) {
    expected[static_cast<std::size_t>(b)].resize(static_cast<std::size_t>(b * out));
    session->run(input.data(), b, expected[static_cast<std::size_t>(b)].data());
  }
  constexpr int threads = 4, calls = 12;
  std::vector<int> mismatches(threads, 0);
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      std::vector<float> output(static_cast<std::size_t>(max_batch * out));
      for (int c = 0; c < calls; ++c) {
        const std::int64_t b = 1 + (t * 5 + c * 7) % max_batch;
        session->run(input.data(), b, output.data());
        if (!std::equal(output.begin(), output.begin() + b * out, expected[static_cast<std::size_t>(b)].begin())) {
          ++mismatches[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(mismatches, std::vector<int>(threads, 0));
  EXPECT_LE(session->workspace_count(), static_cast<std::size_t>(threads + 1));
}

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionTest, ::testing::Values("seed-cnn", "attn-cnn"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

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

}  // namespace
}  // namespace ember
