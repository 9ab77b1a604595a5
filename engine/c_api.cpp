// The C API (engine/ember.h) over InferenceSession. Exceptions never cross it: every
// failure becomes a return value and a per-thread message. The sizes a C caller passes
// are checked here, before the session sees a pointer.
#include <algorithm>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "engine/ember.h"
#include "engine/error.h"
#include "engine/onnx_export.h"
#include "engine/session.h"
#include "engine/training_state.h"

#ifndef EMBER_VERSION_STRING
#error "EMBER_VERSION_STRING must be defined by the build (engine/CMakeLists.txt)"
#endif

struct ember_session {
  std::unique_ptr<ember::InferenceSession> session;
  float mean = 0.0f;  // the training run's input normalization
  float std = 1.0f;
};

namespace {

thread_local std::string last_error;

void copy_message(const std::string& message, char* error, size_t error_size) {
  if (error == nullptr || error_size == 0) return;
  const size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

// Runs `body`, which returns the call's result; on any exception records its message and
// returns `failed`. Assigning the message can itself run out of memory, so that is caught too.
template <class Result, class Body>
Result guarded(Result failed, Body&& body) noexcept {
  try {
    last_error.clear();
    return body();
  } catch (const std::bad_alloc&) {
    try { last_error = "out of memory"; } catch (...) {}
  } catch (const std::exception& e) {
    try { last_error = e.what(); } catch (...) {}
  } catch (...) {
    try { last_error = "unknown error"; } catch (...) {}
  }
  return failed;
}

const ember::InferenceSession& checked(const ember_session* session, const char* function) {
  if (session == nullptr) throw ember::Error(std::string(function) + ": session is NULL");
  return *session->session;
}

// batch x per_sample floats; a session made for an absurd max_batch must not let the
// product wrap around and pass the size checks.
size_t floats_for(int64_t batch, int64_t per_sample) {
  size_t floats = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(batch), static_cast<size_t>(per_sample), &floats)) {
    throw ember::Error("ember_session_run: a batch of " + std::to_string(batch) + " samples of " +
                       std::to_string(per_sample) + " floats does not fit in memory");
  }
  return floats;
}

}  // namespace

extern "C" {

const char* ember_version(void) { return EMBER_VERSION_STRING; }

ember_session* ember_session_create(const char* checkpoint_path, int64_t max_batch, char* error, size_t error_size) {
  return ember_session_create_limited(checkpoint_path, max_batch, 0, error, error_size);
}

ember_session* ember_session_create_limited(const char* checkpoint_path, int64_t max_batch, uint64_t memory_limit_bytes,
                                            char* error, size_t error_size) {
  ember_session* handle = guarded<ember_session*>(nullptr, [&] {
    if (checkpoint_path == nullptr) throw ember::Error("ember_session_create: checkpoint path is NULL");
    ember::SessionOptions options;
    options.max_batch = max_batch;
    options.memory_limit = static_cast<std::size_t>(memory_limit_bytes);
    ember::TrainedModel model = ember::load_trained_model(checkpoint_path, options.memory_limit);
    auto created = std::make_unique<ember_session>();
    const std::vector<double> mean = ember::run_normalization(model.run, "mean", 0.0);
    const std::vector<double> std = ember::run_normalization(model.run, "std", 1.0);
    if (mean.size() != 1 || std.size() != 1) {
      throw ember::Error(std::string(checkpoint_path) + ": the model was trained with per-channel normalization (" +
                         std::to_string(mean.size()) + " means); the C API normalizes with one mean and std");
    }
    created->mean = static_cast<float>(mean[0]);
    created->std = static_cast<float>(std[0]);
    created->session =
        std::make_unique<ember::InferenceSession>(std::move(model.graph), std::move(model.parameters), options);
    return created.release();
  });
  if (handle == nullptr) copy_message(last_error, error, error_size);
  return handle;
}

int ember_export_onnx(const char* checkpoint_path, const char* onnx_path, int opset, char* error, size_t error_size) {
  const int result = guarded(-1, [&] {
    if (checkpoint_path == nullptr) throw ember::Error("ember_export_onnx: checkpoint path is NULL");
    if (onnx_path == nullptr) throw ember::Error("ember_export_onnx: ONNX path is NULL");
    ember::export_checkpoint_onnx(checkpoint_path, onnx_path, opset == 0 ? ember::onnx_default_opset : opset);
    return 0;
  });
  if (result != 0) copy_message(last_error, error, error_size);
  return result;
}

int ember_session_run(const ember_session* session, const float* input, size_t input_floats, int64_t batch,
                      float* output, size_t output_floats) {
  return guarded(-1, [&] {
    const ember::InferenceSession& s = checked(session, "ember_session_run");
    if (input == nullptr) throw ember::Error("ember_session_run: input is NULL");
    if (output == nullptr) throw ember::Error("ember_session_run: output is NULL");
    if (batch < 1 || batch > s.max_batch()) {
      throw ember::Error("ember_session_run: batch must be 1 to " + std::to_string(s.max_batch()) + ", found " +
                         std::to_string(batch));
    }
    const size_t input_needed = floats_for(batch, s.input_sample_elements());
    const size_t output_needed = floats_for(batch, s.output_sample_elements());
    if (input_floats != input_needed) {
      throw ember::Error("ember_session_run: input must hold " + std::to_string(input_needed) + " floats (batch " +
                         std::to_string(batch) + " x sample " + s.input_sample_shape().str() + "), found " +
                         std::to_string(input_floats));
    }
    if (output_floats < output_needed) {
      throw ember::Error("ember_session_run: output must hold at least " + std::to_string(output_needed) +
                         " floats (batch " + std::to_string(batch) + " x " + std::to_string(s.output_sample_elements()) +
                         "), found " + std::to_string(output_floats));
    }
    s.run(input, batch, output);
    return 0;
  });
}

int ember_session_input_shape(const ember_session* session, int64_t* dims, int capacity) {
  return guarded(-1, [&] {
    const ember::InferenceSession& s = checked(session, "ember_session_input_shape");
    if (capacity < 0) throw ember::Error("ember_session_input_shape: capacity must be >= 0, found " + std::to_string(capacity));
    if (dims == nullptr && capacity > 0) throw ember::Error("ember_session_input_shape: dims is NULL");
    const ember::Shape& shape = s.input_sample_shape();
    for (int axis = 0; axis < std::min(shape.rank(), capacity); ++axis) dims[axis] = shape[axis];
    return shape.rank();
  });
}

int64_t ember_session_input_elements(const ember_session* session) {
  return guarded<int64_t>(-1, [&] { return checked(session, "ember_session_input_elements").input_sample_elements(); });
}

int64_t ember_session_output_elements(const ember_session* session) {
  return guarded<int64_t>(-1, [&] { return checked(session, "ember_session_output_elements").output_sample_elements(); });
}

int64_t ember_session_max_batch(const ember_session* session) {
  return guarded<int64_t>(-1, [&] { return checked(session, "ember_session_max_batch").max_batch(); });
}

int ember_session_input_normalization(const ember_session* session, float* mean, float* std) {
  return guarded(-1, [&] {
    checked(session, "ember_session_input_normalization");
    if (mean == nullptr || std == nullptr) throw ember::Error("ember_session_input_normalization: mean or std is NULL");
    *mean = session->mean;
    *std = session->std;
    return 0;
  });
}

const char* ember_last_error(void) { return last_error.c_str(); }

void ember_session_destroy(ember_session* session) { delete session; }

}  // extern "C"
