// Sizes that come from files and flags: checked arithmetic (an overflow is an ember::Error
// naming the field, never wrap-around or undefined behaviour), JSON errors of every kind
// as ember::Error, and the memory limit decided before anything is allocated.
#include "engine/memory_limit.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <thread>

#include "engine/checked.h"
#include "engine/ember.h"
#include "engine/idx.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/process_memory.h"
#include "engine/safetensors.h"
#include "engine/session.h"
#include "engine/step_memory.h"
#include "engine/trainer.h"
#include "engine/training_state.h"
#include "support/file_helpers.h"

namespace ember {
namespace {

using testing::Bytes;
using testing::contains;
using testing::error_of;
using testing::read_file;
using testing::starts_with;
using testing::write_file;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

TEST(CheckedArithmetic, OverflowIsAnErrorNamingTheField) {
  EXPECT_EQ(checked_multiply<std::int64_t>(3, 4, "x"), 12);
  EXPECT_EQ(error_of([] { checked_multiply<std::int64_t>(int64_max / 2 + 1, 2, "fc.weight"); }),
            "fc.weight: 4611686018427387904 x 2 overflows");
  EXPECT_EQ(error_of([] { checked_add<std::size_t>(std::numeric_limits<std::size_t>::max(), 1, "arena"); }),
            "arena: 18446744073709551615 + 1 overflows");
  EXPECT_EQ(error_of([] { checked_subtract<std::int64_t>(std::numeric_limits<std::int64_t>::min(), 1, "d"); }),
            "d: -9223372036854775808 - 1 overflows");
  EXPECT_EQ(error_of([] { checked_float_bytes(int64_max, "t"); }), "t: 9223372036854775807 x 4 overflows");
  EXPECT_EQ(error_of([] { checked_size(-1, "count"); }), "count: expected a size >= 0, found -1");
  EXPECT_EQ(checked_align_up(65, 64, "a"), 128u);
  EXPECT_EQ(error_of([] { checked_align_up(std::numeric_limits<std::size_t>::max() - 3, 64, "a"); }),
            "a: 18446744073709551612 + 63 overflows");
}

TEST(CheckedArithmetic, ShapesRefuseHugeDimensionsAndOverflowingCounts) {
  EXPECT_EQ(error_of([] { Shape{1, Shape::max_dimension + 1}; }),
            "shape dimension 1: expected 0 to 2147483647, found 2147483648");
  const Shape huge{Shape::max_dimension, Shape::max_dimension, Shape::max_dimension};
  EXPECT_EQ(error_of([&] { (void)huge.elements(); }),
            "shape (2147483647, 2147483647, 2147483647): the element count overflows 64 bits");
  EXPECT_EQ(error_of([&] { (void)huge.prepend(1).sample_elements(); }),
            "shape (1, 2147483647, 2147483647, 2147483647): the element count overflows 64 bits");
  EXPECT_EQ(error_of([&] { (void)huge.with_batch(-1); }), "batch size: expected 0 to 2147483647, found -1");
  EXPECT_EQ((Shape{2, 3, 4}).sample_elements(), 12);
}

std::string spec_error(const std::string& text) {
  return error_of([&] { graph_from_spec(Json::parse(text), "spec.json"); });
}

TEST(CheckedArithmetic, SpecIntegersBeyondADimensionAreRefusedByName) {
  EXPECT_EQ(spec_error(R"({"input": [1, 8, 8], "layers": [{"name": "fc", "kind": "flatten"},
      {"name": "out", "kind": "linear", "in_features": 64, "out_features": 100000000000}]})"),
            "spec.json: layer 'out': linear option 'out_features': expected a positive integer up to 2147483647, found "
            "100000000000");
  EXPECT_EQ(spec_error(R"({"input": [1, 8, 8], "layers": [{"name": "c", "kind": "conv2d", "in_channels": 1,
      "out_channels": 2, "kernel": 3, "padding": 4611686018427387904}]})"),
            "spec.json: layer 'c': conv2d option 'padding': expected a non-negative integer up to 2147483647 or [h, w] of "
            "them, found 4611686018427387904");
  EXPECT_EQ(spec_error(R"({"input": [1, 9223372036854775807, 8], "layers": [{"name": "f", "kind": "flatten"}]})"),
            "spec.json: field 'input': dimensions must be positive integers up to 2147483647, found [1,9223372036854775807,8]");
  // The largest dilation and kernel a spec may give: the dilated extent is ~2^62, which the
  // output-size arithmetic must compute without overflow and report as too large.
  EXPECT_EQ(spec_error(R"({"input": [1, 8, 8], "layers": [{"name": "c", "kind": "conv2d", "in_channels": 1,
      "out_channels": 2, "kernel": 2147483647, "dilation": 2147483647, "padding": 2147483647}]})"),
            "spec.json: layer 'c' (conv2d): conv2d: input (1, 1, 8, 8) is smaller than the dilated kernel (2147483647, dilation "
            "2147483647) after padding 2147483647");
  // Pooling's largest window with the most padding it allows: the padded input is just
  // longer than the window, computed without overflow.
  const Graph pool = graph_from_spec(Json::parse(R"({"input": [1, 8, 8], "layers": [{"name": "p", "kind": "max_pool2d",
      "kernel": 2147483647, "stride": 1, "padding": 1073741823}]})"));
  EXPECT_EQ(pool.value_shape(pool.output()), (Shape{1, 1, 8, 8}));
  // Every dimension allowed, the product is not: flatten's output count overflows.
  EXPECT_EQ(spec_error(R"({"input": [2147483647, 2147483647, 2147483647], "layers": [{"name": "f", "kind": "flatten"}]})"),
            "spec.json: layer 'f' (flatten): shape (1, 2147483647, 2147483647, 2147483647): the element count overflows 64 bits");
}

TEST(JsonErrors, FieldsOfTheWrongTypeInASpecAreNamed) {
  EXPECT_EQ(spec_error(R"({"input": [1, 8, 8], "loss": 5, "layers": [{"name": "f", "kind": "flatten"}]})"),
            "spec.json: field 'loss': expected a string, found 5");
  EXPECT_EQ(spec_error(R"({"input": [1, 8, 8], "name": [], "layers": [{"name": "f", "kind": "flatten"}]})"),
            "spec.json: field 'name': expected a string, found []");
}

class FileLimits : public testing::TempDirectoryTest {};

TEST_F(FileLimits, NumbersBeyondADoubleAreAnEmberErrorNamingTheFile) {
  // nlohmann::json throws out_of_range, not parse_error, for 1e309.
  const std::string spec = path("spec.json");
  const std::string text = R"({"input": [1, 8, 8], "lr": 1e309, "layers": []})";
  write_file(spec, Bytes(text.begin(), text.end()));
  const std::string message = error_of([&] { load_model_spec(spec); });
  EXPECT_TRUE(starts_with(message, spec + " is not valid JSON: ")) << message;
  EXPECT_TRUE(contains(message, "1e309")) << message;

  const std::string header = R"({"t": {"dtype": "F32", "shape": [1e309], "data_offsets": [0, 4]}})";
  Bytes file(8, 0);
  for (int i = 0; i < 8; ++i) file[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(header.size() >> (8 * i));
  file.insert(file.end(), header.begin(), header.end());
  file.insert(file.end(), 4, 0);
  write_file(path("t.safetensors"), file);
  const std::string header_message = error_of([&] { SafetensorsFile::read(path("t.safetensors")); });
  EXPECT_TRUE(starts_with(header_message, path("t.safetensors") + ": the header is not valid JSON: ")) << header_message;
}

// A checkpoint of the seed CNN whose metadata field `key` is replaced by `value`.
std::string checkpoint_with(const std::string& directory_path, const std::string& key, const std::string& value) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"));
  ParameterStore parameters(graph);
  parameters.initialize(1);
  std::vector<TensorToWrite> tensors;
  for (const ParameterEntry& entry : parameters.entries()) {
    tensors.push_back({entry.name, {entry.spec.shape.dims().begin(), entry.spec.shape.dims().end()},
                       parameters.values().subspan(static_cast<std::size_t>(entry.offset),
                                                   static_cast<std::size_t>(entry.spec.shape.elements()))});
  }
  std::map<std::string, std::string> metadata{{"format", "ember.checkpoint"},
                                              {"format_version", "1"},
                                              {"model_spec", spec_from_graph(graph, "seed-cnn").dump()},
                                              {"optimizer", R"({"name": "adam"})"},
                                              {"run", "{}"},
                                              {"epoch", "0"},
                                              {"step", "0"},
                                              {"optimizer_steps", "0"}};
  metadata[key] = value;
  write_safetensors(directory_path, tensors, metadata);
  return directory_path;
}

TEST_F(FileLimits, CheckpointMetadataBeyondADoubleIsNamed) {
  const std::string run = checkpoint_with(path("run.safetensors"), "run", R"({"mean": 1e309})");
  EXPECT_TRUE(starts_with(error_of([&] { load_trained_model(run); }), run + ": __metadata__.run is not valid JSON: "));
  const std::string spec = checkpoint_with(path("spec.safetensors"), "model_spec", R"({"input": [1e309]})");
  EXPECT_TRUE(starts_with(error_of([&] { load_trained_model(spec); }), spec + ": __metadata__.model_spec is not valid JSON: "));
}

TEST_F(FileLimits, ACheckpointIsCheckedAgainstItsSpecBeforeTheSpecsBuffersExist) {
  // The spec asks for a 2^31 x 1024 Linear (16 GiB of values and gradients, within this
  // machine's limit perhaps): the file does not hold it, and that is found before the
  // parameter blocks are allocated and zeroed, so resident memory does not grow by them.
  const std::string spec = R"({"input": [1024], "layers": [{"name": "fc", "kind": "linear", "in_features": 1024,
                                                           "out_features": 2147483647}]})";
  const std::string file = checkpoint_with(path("big.safetensors"), "model_spec", spec);
  reset_peak_resident();
  const std::size_t before = peak_resident_bytes();
  EXPECT_EQ(error_of([&] { load_trained_model(file); }), file + ": no tensor 'fc.weight'");
  EXPECT_LT(peak_resident_bytes() - before, std::size_t{64} << 20);
}

TEST_F(FileLimits, AGzipBombIsRefusedAtTheLimit) {
  // 4 MiB of zeros deflate to a few KiB.
  const std::vector<Bytef> zeros(4 << 20, 0);
  uLongf size = compressBound(zeros.size());
  Bytes deflated(size);
  z_stream stream{};
  ASSERT_EQ(deflateInit2(&stream, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
  stream.next_in = const_cast<Bytef*>(zeros.data());
  stream.avail_in = static_cast<uInt>(zeros.size());
  stream.next_out = deflated.data();
  stream.avail_out = static_cast<uInt>(deflated.size());
  ASSERT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  deflated.resize(stream.total_out);
  deflateEnd(&stream);
  write_file(path("bomb.gz"), deflated);
  EXPECT_EQ(error_of([&] { read_maybe_gzipped(path("bomb.gz"), 1 << 20); }),
            path("bomb.gz") + ": the gzip data inflates to more than 1.00 MiB (the memory limit)");
  EXPECT_EQ(read_maybe_gzipped(path("bomb.gz"), 4 << 20).size(), zeros.size());
}

TEST_F(FileLimits, AFileLargerThanTheLimitIsRefusedBeforeItIsRead) {
  write_file(path("large.idx"), Bytes((1 << 20) + 1, 0));
  EXPECT_EQ(error_of([&] { read_maybe_gzipped(path("large.idx"), 1 << 20); }),
            path("large.idx") + ": the file holds more than 1.00 MiB (the memory limit), found 1048577 bytes");
  EXPECT_EQ(read_maybe_gzipped(path("large.idx"), 2 << 20).size(), (1u << 20) + 1);
}

TEST(MemoryLimit, SizesParseAndPrint) {
  EXPECT_EQ(parse_memory_size("0", "--memory-limit"), default_memory_limit);
  EXPECT_EQ(parse_memory_size("123", "f"), 123u);
  EXPECT_EQ(parse_memory_size("512K", "f"), 512u << 10);
  EXPECT_EQ(parse_memory_size("64M", "f"), 64u << 20);
  EXPECT_EQ(parse_memory_size("1.5G", "f"), 3ull << 29);
  EXPECT_EQ(parse_memory_size("2GiB", "f"), 2ull << 30);
  EXPECT_EQ(parse_memory_size("2gb", "f"), 2ull << 30);
  for (const char* bad : {"", "-1", "G", "4X", "1e3", "99999999999T", "1..2G"}) {
    EXPECT_EQ(error_of([&] { parse_memory_size(bad, "--memory-limit"); }),
              std::string("--memory-limit: expected a size in bytes such as 512M, 4G or 1.5G (0 for the available memory), "
                          "found '") + bad + "'");
  }
  EXPECT_EQ(format_bytes(512), "512 bytes");
  EXPECT_EQ(format_bytes(3ull << 29), "1.50 GiB");
  EXPECT_EQ(format_bytes(std::size_t{12} << 20), "12.0 MiB");
  EXPECT_GT(available_memory_bytes(), std::size_t{0});
  EXPECT_EQ(resolve_memory_limit(77), 77u);
}

TEST(MemoryLimit, AModelLargerThanTheLimitIsRefusedWithTheFigure) {
  const Graph graph = graph_from_spec(builtin_model_spec("seed-cnn"), "seed-cnn");
  const ParameterLayout layout = parameter_layout(graph);
  // 804,554 values padded to 64 bytes per tensor: 3.07 MiB a block, two blocks.
  EXPECT_EQ(error_of([&] { check_model_memory(graph, layout.total_floats, 16, 4 << 20, "seed-cnn"); }),
            "seed-cnn: the parameter memory needs 6.14 MiB (a block of values and one of gradients); the memory limit is 4.00 "
            "MiB (the available memory unless set: --memory-limit, SessionOptions::memory_limit, "
            "ember_session_create_limited)");
  EXPECT_NO_THROW(check_model_memory(graph, layout.total_floats, 16, 64 << 20, "seed-cnn"));
  // The conv1 output of a micro-batch of 4096 alone: 4096 x 32 x 28 x 28 floats.
  EXPECT_TRUE(starts_with(error_of([&] { check_model_memory(graph, layout.total_floats, 4096, 64 << 20, "seed-cnn"); }),
                          "seed-cnn: the output of layer 'conv1' (4096, 32, 28, 28) needs 392 MiB;"));

  const ParameterStore parameters(graph);
  StepMemoryOptions options;
  options.batch = 256;
  const StepMemory memory = estimate_step_memory(graph, parameters, options);
  EXPECT_NO_THROW(check_step_memory(memory, memory.total(), "seed-cnn"));
  EXPECT_TRUE(starts_with(error_of([&] { check_step_memory(memory, memory.total() - 1, "seed-cnn"); }),
                          "seed-cnn: the step needs " + format_bytes(memory.total()) + " (parameters "));
}

// Training refuses before it allocates the model: the message names the model and the limit.
TEST(MemoryLimit, TrainingRefusesAModelBeyondTheLimit) {
  class Quiet final : public TrainingObserver {} quiet;
  TrainOptions options;
  options.model = "seed-cnn";
  options.data = "attention-retrieval";  // never loaded: the model is refused first
  options.memory_limit = 1 << 20;
  EXPECT_TRUE(starts_with(error_of([&] { train(options, quiet); }), "seed-cnn: the parameter memory needs 6.14 MiB"));
  options.memory_limit = 16 << 20;  // the parameters fit, the Adam step does not
  EXPECT_TRUE(starts_with(error_of([&] { train(options, quiet); }), "seed-cnn: the step needs "));
}

class SessionLimits : public testing::TempDirectoryTest {
 protected:
  std::string checkpoint() { return checkpoint_with(path("seed.safetensors"), "epoch", "0"); }
};

TEST_F(SessionLimits, ASessionBeyondTheLimitIsRefused) {
  SessionOptions options;
  // 6.5 MiB and the weights prepared once (packed or reordered): the weights fit, a
  // workspace for 16 samples does not.
  const std::size_t prepared = InferenceSession::open(checkpoint(), options)->constant_bytes();
  options.memory_limit = (13 << 19) + prepared;
  const std::string message = error_of([&] { InferenceSession::open(checkpoint(), options); });
  EXPECT_TRUE(starts_with(message, "inference session needs ")) << message;
  EXPECT_TRUE(contains(message, "1 workspace(s) of ")) << message;
  EXPECT_TRUE(contains(message, "the memory limit is " + format_bytes(options.memory_limit))) << message;

  char error[512] = "";
  EXPECT_EQ(ember_session_create_limited(checkpoint().c_str(), 16, 1 << 20, error, sizeof error), nullptr);
  EXPECT_TRUE(starts_with(error, checkpoint() + ": the parameter memory needs 6.14 MiB")) << error;
}

TEST_F(SessionLimits, CallersBeyondWhatTheLimitAllowsWaitForAWorkspace) {
  SessionOptions options;
  options.max_batch = 16;
  const auto probe = InferenceSession::open(checkpoint(), options);
  const std::size_t arena = probe->arena_bytes();
  // Room for the weights, their gradient block, the weights prepared once (packed or
  // reordered) and one workspace (its arena and a small flag buffer), not two.
  const std::size_t weights = 2 * parameter_layout(graph_from_spec(builtin_model_spec("seed-cnn"))).block_bytes();
  options.memory_limit = weights + probe->constant_bytes() + arena + arena / 2;
  const auto session = InferenceSession::open(checkpoint(), options);
  const std::int64_t in = session->input_sample_elements(), out = session->output_sample_elements();
  std::vector<float> input(static_cast<std::size_t>(16 * in), 0.5f), expected(static_cast<std::size_t>(16 * out));
  session->run(input.data(), 16, expected.data());
  std::atomic<int> mismatches{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      std::vector<float> output(expected.size());
      for (int call = 0; call < 20; ++call) {
        session->run(input.data(), 16, output.data());
        if (std::memcmp(output.data(), expected.data(), output.size() * sizeof(float)) != 0) ++mismatches;
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(session->workspace_count(), 1u);
}

// A session of 4 threads whose limit allows one workspace: a call of several micro-batches
// runs on the threads it got workspaces for (one), rather than waiting for a second
// workspace while it holds the first.
TEST_F(SessionLimits, ThreadsBeyondTheWorkspacesTheLimitAllowsDoNotWait) {
  SessionOptions options;
  options.max_batch = 64;
  options.threads = 4;
  const auto probe = InferenceSession::open(checkpoint(), options);
  const std::size_t weights = 2 * parameter_layout(graph_from_spec(builtin_model_spec("seed-cnn"))).block_bytes();
  options.memory_limit = weights + probe->constant_bytes() + probe->arena_bytes() + probe->arena_bytes() / 2;
  const auto session = InferenceSession::open(checkpoint(), options);
  const std::int64_t in = session->input_sample_elements(), out = session->output_sample_elements();
  std::vector<float> input(static_cast<std::size_t>(64 * in), 0.25f), output(static_cast<std::size_t>(64 * out));
  std::vector<float> expected(output.size());
  probe->run(input.data(), 64, expected.data());
  session->run(input.data(), 64, output.data());
  EXPECT_EQ(std::memcmp(output.data(), expected.data(), output.size() * sizeof(float)), 0);
  EXPECT_EQ(session->workspace_count(), 1u);
}

}  // namespace
}  // namespace ember
