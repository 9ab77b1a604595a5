// The C API (engine/ember.h) on arbitrary checkpoint bytes: a failed create must return
// NULL with a message; a created session must answer its queries and run a batch of
// zeros (when the model is small enough to run quickly).
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/ember.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

constexpr std::int64_t max_batch = 2;
constexpr std::int64_t max_run_elements = std::int64_t{1} << 20;

void check(bool condition, const char* what) {
  if (!condition) ember::fuzz::finding(what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = ember::fuzz::write_input("checkpoint.safetensors", data, size);
  char error[256];
  ember_session* session = ember_session_create(path.c_str(), max_batch, error, sizeof error);
  if (!session) {
    check(std::strlen(ember_last_error()) > 0, "ember_session_create failed with an empty ember_last_error()");
    check(std::strncmp(error, ember_last_error(), sizeof error - 1) == 0, "the error buffer differs from ember_last_error()");
    return 0;
  }
  check(ember_last_error()[0] == '\0', "ember_session_create succeeded but left an error message");
  const std::int64_t input = ember_session_input_elements(session);
  const std::int64_t output = ember_session_output_elements(session);
  check(input > 0 && output > 0, "a session with a non-positive input or output element count");
  check(ember_session_max_batch(session) == max_batch, "ember_session_max_batch differs from the batch asked for");
  std::int64_t dims[8];
  const int rank = ember_session_input_shape(session, dims, 8);
  check(rank > 0 && rank <= 8, "ember_session_input_shape returned an impossible rank");
  float mean = 0, deviation = 0;
  check(ember_session_input_normalization(session, &mean, &deviation) == 0, "ember_session_input_normalization failed");
  if (input <= max_run_elements && output <= max_run_elements) {
    const std::vector<float> in(static_cast<std::size_t>(input), 0.0f);
    std::vector<float> out(static_cast<std::size_t>(output) + 1, -1.0f);
    const int status = ember_session_run(session, in.data(), in.size(), 1, out.data(), out.size() - 1);
    check(status == 0 || std::strlen(ember_last_error()) > 0, "ember_session_run failed with an empty ember_last_error()");
    check(out.back() == -1.0f, "ember_session_run wrote past the output it was given");
    check(ember_session_run(session, in.data(), in.size() - 1, 1, out.data(), out.size()) == -1,
          "ember_session_run accepted an input one float short");
    check(ember_session_run(session, in.data(), in.size(), max_batch + 1, out.data(), out.size()) == -1,
          "ember_session_run accepted a batch above max_batch");
  }
  ember_session_destroy(session);
  return 0;
}
