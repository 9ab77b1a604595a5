// The C API (engine/ember.h) as a C caller sees it: bad files, NULL pointers and wrong
// sizes come back as -1/NULL with a message naming the expected and found values, no
// exception escapes (out of memory included), a successful run gives bitwise the
// outputs of InferenceSession, and the last error is per thread.
#include "engine/ember.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/session.h"
#include "engine/training_state.h"
#include "support/file_helpers.h"

// While set, every operator new on this thread throws std::bad_alloc. Replacing the global
// operator new affects the whole test binary, but only threads that set the flag see a
// difference; the ember library (shared or static) resolves its allocations to this one.
namespace {
thread_local bool fail_allocations = false;
}  // namespace

void* operator new(std::size_t bytes) {
  if (fail_allocations) throw std::bad_alloc();
  if (void* p = std::malloc(bytes == 0 ? 1 : bytes)) return p;
  throw std::bad_alloc();
}
// Every other unaligned form is replaced too, so each allocation and its deallocation go
// through the same pair (AddressSanitizer reports a nothrow new from its runtime freed by
// this delete as a mismatch).
void* operator new[](std::size_t bytes) { return ::operator new(bytes); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  if (fail_allocations) return nullptr;
  return std::malloc(bytes == 0 ? 1 : bytes);
}
void* operator new[](std::size_t bytes, const std::nothrow_t& tag) noexcept { return ::operator new(bytes, tag); }
// Out of line, so that GCC does not see new's pointer reach free() and warn of a mismatch.
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace ember {
namespace {

using testing::contains;

constexpr std::int64_t max_batch = 5;

// RAII for a C session, so a failing assertion does not leak it.
struct SessionHandle {
  explicit SessionHandle(ember_session* s) : session(s) {}
  ~SessionHandle() { ember_session_destroy(session); }
  SessionHandle(const SessionHandle&) = delete;
  SessionHandle& operator=(const SessionHandle&) = delete;
  ember_session* session;
};

class CApiTest : public testing::TempDirectoryTest {
 protected:
  void SetUp() override {
    TempDirectoryTest::SetUp();
    checkpoint_ = path("seed-cnn.safetensors");
    Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
    ParameterStore parameters(graph);
    parameters.initialize(3);
    auto optimizer = make_optimizer("sgd", OptimizerOptions{}, parameters);
    TrainingState state;
    state.model_spec = spec_from_graph(graph, "seed-cnn");
    state.optimizer = {{"name", std::string(optimizer->name())}, {"learning_rate", optimizer->learning_rate()}};
    state.run = {{"seed", 3}, {"mean", 0.25}, {"std", 0.5}};
    save_training_state(checkpoint_, state, parameters, *optimizer);
  }

  // Creating from `file` must fail with a message naming it, in the buffer and in
  // ember_last_error() alike.
  void expect_refused(const std::string& file) {
    char error[512] = "unchanged";
    ember_session* session = ember_session_create(file.c_str(), max_batch, error, sizeof error);
    EXPECT_EQ(session, nullptr);
    ember_session_destroy(session);
    EXPECT_TRUE(contains(error, file)) << error;
    EXPECT_STREQ(ember_last_error(), error);
  }

  std::string checkpoint_;
};

TEST(CApi, VersionIsTheProjectVersion) { EXPECT_STREQ(ember_version(), EMBER_PROJECT_VERSION); }

TEST_F(CApiTest, MissingFileIsRefusedWithItsName) { expect_refused(path("missing.safetensors")); }

TEST_F(CApiTest, TruncatedCheckpointIsRefusedWithItsName) {
  const testing::Bytes bytes = testing::read_file(checkpoint_);
  for (std::size_t length : {std::size_t{0}, std::size_t{5}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE(length);
    const std::string truncated = path("truncated.safetensors");
    testing::write_file(truncated, testing::Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(length)));
    expect_refused(truncated);
  }
}

TEST_F(CApiTest, CorruptCheckpointIsRefusedWithItsName) {
  testing::Bytes bytes = testing::read_file(checkpoint_);
  const std::string corrupt = path("corrupt.safetensors");
  bytes[8] = '[';  // the JSON header no longer parses as an object
  testing::write_file(corrupt, bytes);
  expect_refused(corrupt);
  bytes = testing::read_file(checkpoint_);
  bytes[7] = 0x7f;  // a header length of ~9e18 bytes
  testing::write_file(corrupt, bytes);
  expect_refused(corrupt);
}

TEST_F(CApiTest, ErrorBufferIsTruncatedAndTerminated) {
  char error[8];
  std::memset(error, 'x', sizeof error);
  EXPECT_EQ(ember_session_create(path("missing").c_str(), max_batch, error, sizeof error), nullptr);
  EXPECT_EQ(std::strlen(error), sizeof error - 1);
  EXPECT_EQ(std::string(ember_last_error()).substr(0, sizeof error - 1), error);
  // No buffer at all: the message is still in ember_last_error().
  EXPECT_EQ(ember_session_create(path("missing").c_str(), max_batch, nullptr, 0), nullptr);
  EXPECT_TRUE(contains(ember_last_error(), path("missing"))) << ember_last_error();
}

TEST_F(CApiTest, BadMaxBatchIsRefused) {
  char error[512];
  EXPECT_EQ(ember_session_create(checkpoint_.c_str(), 0, error, sizeof error), nullptr);
  EXPECT_TRUE(contains(error, "max batch must be at least 1, found 0")) << error;
}

TEST_F(CApiTest, NullArgumentsAreRefused) {
  EXPECT_EQ(ember_session_create(nullptr, max_batch, nullptr, 0), nullptr);
  EXPECT_STREQ(ember_last_error(), "ember_session_create: checkpoint path is NULL");

  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::vector<float> input(784), output(10);
  EXPECT_EQ(ember_session_run(nullptr, input.data(), input.size(), 1, output.data(), output.size()), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_run: session is NULL");
  EXPECT_EQ(ember_session_run(handle.session, nullptr, input.size(), 1, output.data(), output.size()), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_run: input is NULL");
  EXPECT_EQ(ember_session_run(handle.session, input.data(), input.size(), 1, nullptr, output.size()), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_run: output is NULL");

  EXPECT_EQ(ember_session_input_elements(nullptr), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_input_elements: session is NULL");
  EXPECT_EQ(ember_session_output_elements(nullptr), -1);
  EXPECT_EQ(ember_session_max_batch(nullptr), -1);
  EXPECT_EQ(ember_session_input_shape(nullptr, nullptr, 0), -1);
  EXPECT_EQ(ember_session_input_shape(handle.session, nullptr, 3), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_input_shape: dims is NULL");
  float mean = 0, std = 0;
  EXPECT_EQ(ember_session_input_normalization(nullptr, &mean, &std), -1);
  EXPECT_EQ(ember_session_input_normalization(handle.session, nullptr, &std), -1);
  ember_session_destroy(nullptr);
}

TEST_F(CApiTest, BadBatchIsRefusedAndOutputUntouched) {
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::vector<float> input(784 * (max_batch + 1)), output(10 * (max_batch + 1), 42.0f);
  for (std::int64_t batch : {std::int64_t{0}, std::int64_t{-1}, max_batch + 1}) {
    const size_t floats = static_cast<size_t>(std::max<std::int64_t>(batch, 0)) * 784;
    EXPECT_EQ(ember_session_run(handle.session, input.data(), floats, batch, output.data(), output.size()), -1);
    EXPECT_EQ(std::string(ember_last_error()),
              "ember_session_run: batch must be 1 to " + std::to_string(max_batch) + ", found " + std::to_string(batch));
  }
  EXPECT_EQ(output, std::vector<float>(output.size(), 42.0f));
}

TEST_F(CApiTest, WrongSizesAreRefusedWithExpectedAndFound) {
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::vector<float> input(784 * 3 + 1), output(10 * 3, 42.0f);
  for (size_t floats : {784u * 3 - 1, 784u * 3 + 1, 784u}) {
    EXPECT_EQ(ember_session_run(handle.session, input.data(), floats, 3, output.data(), output.size()), -1);
    EXPECT_EQ(std::string(ember_last_error()), "ember_session_run: input must hold 2352 floats (batch 3 x sample (1, 28, 28)), found " +
                                                   std::to_string(floats));
  }
  EXPECT_EQ(ember_session_run(handle.session, input.data(), 784 * 3, 3, output.data(), 29), -1);
  EXPECT_STREQ(ember_last_error(), "ember_session_run: output must hold at least 30 floats (batch 3 x 10), found 29");
  EXPECT_EQ(output, std::vector<float>(output.size(), 42.0f));
}

TEST_F(CApiTest, HugeBatchDoesNotWrapTheSizeCheck) {
  // 2^60 samples of 784 floats: the product (about 2^69.6) does not fit in 64 bits.
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), std::int64_t{1} << 62, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::vector<float> input(784), output(10);
  const std::int64_t batch = std::int64_t{1} << 60;
  EXPECT_EQ(ember_session_run(handle.session, input.data(), 784 * static_cast<size_t>(batch), batch, output.data(), output.size()), -1);
  EXPECT_EQ(std::string(ember_last_error()), "ember_session_run: a batch of " + std::to_string(batch) +
                                                 " samples of 784 floats does not fit in memory");
}

TEST_F(CApiTest, ShapeAndNormalizationAreThoseOfTheCheckpoint) {
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::int64_t dims[4] = {-7, -7, -7, -7};
  EXPECT_EQ(ember_session_input_shape(handle.session, dims, 4), 3);
  EXPECT_EQ(std::vector<std::int64_t>(dims, dims + 4), (std::vector<std::int64_t>{1, 28, 28, -7}));
  dims[0] = dims[1] = -7;
  EXPECT_EQ(ember_session_input_shape(handle.session, dims, 1), 3);  // capacity 1: one dimension written
  EXPECT_EQ(std::vector<std::int64_t>(dims, dims + 2), (std::vector<std::int64_t>{1, -7}));
  EXPECT_EQ(ember_session_input_shape(handle.session, nullptr, 0), 3);
  EXPECT_EQ(ember_session_input_elements(handle.session), 784);
  EXPECT_EQ(ember_session_output_elements(handle.session), 10);
  EXPECT_EQ(ember_session_max_batch(handle.session), max_batch);
  float mean = 0, std = 0;
  EXPECT_EQ(ember_session_input_normalization(handle.session, &mean, &std), 0);
  EXPECT_EQ(mean, 0.25f);
  EXPECT_EQ(std, 0.5f);
}

TEST_F(CApiTest, RunGivesBitwiseTheOutputsOfInferenceSession) {
  SessionOptions options;
  options.max_batch = max_batch;
  const auto reference = InferenceSession::open(checkpoint_, options);
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::mt19937 random(5);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (std::int64_t batch : {std::int64_t{1}, std::int64_t{3}, max_batch}) {
    std::vector<float> input(static_cast<size_t>(batch * 784));
    for (float& x : input) x = value(random);
    std::vector<float> expected(static_cast<size_t>(batch * 10)), found(expected.size() + 3, 42.0f);
    reference->run(input.data(), batch, expected.data());
    ASSERT_EQ(ember_session_run(handle.session, input.data(), input.size(), batch, found.data(), found.size()), 0)
        << ember_last_error();
    EXPECT_STREQ(ember_last_error(), "");
    EXPECT_EQ(std::memcmp(found.data(), expected.data(), expected.size() * sizeof(float)), 0) << "batch " << batch;
    EXPECT_EQ(std::vector<float>(found.end() - 3, found.end()), std::vector<float>(3, 42.0f));  // nothing past the batch
  }
}

TEST_F(CApiTest, LastErrorIsPerThread) {
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  // Each thread fails differently, waits until the other has failed too, then reads its own message.
  std::barrier both_failed(2);
  std::string seen[2];
  auto caller = [&](int index) {
    std::vector<float> input(784), output(10);
    const std::int64_t batch = index == 0 ? 0 : 1;
    const float* in = index == 0 ? input.data() : nullptr;
    ember_session_run(handle.session, in, input.size(), batch, output.data(), output.size());
    both_failed.arrive_and_wait();
    seen[index] = ember_last_error();
  };
  std::thread first(caller, 0), second(caller, 1);
  first.join();
  second.join();
  EXPECT_EQ(seen[0], "ember_session_run: batch must be 1 to 5, found 0");
  EXPECT_EQ(seen[1], "ember_session_run: input is NULL");
  EXPECT_STREQ(ember_last_error(), "");  // this thread's last call (create) succeeded
}

TEST_F(CApiTest, OutOfMemoryComesBackAsAnError) {
  SessionHandle handle(ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0));
  ASSERT_NE(handle.session, nullptr) << ember_last_error();
  std::vector<float> input(784), output(10);
  fail_allocations = true;
  // Building the message of a refused batch allocates, and fails.
  const int bad_batch = ember_session_run(handle.session, input.data(), input.size(), 0, output.data(), output.size());
  const std::string bad_batch_error = ember_last_error();  // (a short string: no allocation)
  const ember_session* created = ember_session_create(checkpoint_.c_str(), max_batch, nullptr, 0);
  fail_allocations = false;
  EXPECT_EQ(bad_batch, -1);
  EXPECT_EQ(bad_batch_error, "out of memory");
  EXPECT_EQ(created, nullptr);
  EXPECT_STREQ(ember_last_error(), "out of memory");
}

}  // namespace
}  // namespace ember
