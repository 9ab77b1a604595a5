// The C API (engine/ember.h) over InferenceSession. Exceptions never cross it: every
// failure becomes a return value and a per-thread message.
#include <algorithm>
#include <cstring>
#include <exception>
#include <string>

#include "engine/ember.h"
#include "engine/error.h"
#include "engine/session.h"

struct ember_session {
  std::unique_ptr<ember::InferenceSession> session;
};

namespace {

thread_local std::string last_error;

void copy_message(const std::string& message, char* error, size_t error_size) {
  if (error == nullptr || error_size == 0) return;
  const size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

}  // namespace

extern "C" {

ember_session* ember_session_create(const char* checkpoint_path, int64_t max_batch, char* error, size_t error_size) {
  last_error.clear();
  try {
    if (checkpoint_path == nullptr) throw ember::Error("checkpoint path is NULL");
    ember::SessionOptions options;
    options.max_batch = max_batch;
    auto* handle = new ember_session{ember::InferenceSession::open(checkpoint_path, options)};
    return handle;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  copy_message(last_error, error, error_size);
  return nullptr;
}

int ember_session_run(const ember_session* session, const float* input, int64_t batch, float* output) {
  last_error.clear();
  try {
    if (session == nullptr) throw ember::Error("session is NULL");
    session->session->run(input, batch, output);
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  return -1;
}

int64_t ember_session_input_elements(const ember_session* session) {
  return session == nullptr ? 0 : session->session->input_sample_elements();
}

int64_t ember_session_output_elements(const ember_session* session) {
  return session == nullptr ? 0 : session->session->output_sample_elements();
}

int64_t ember_session_max_batch(const ember_session* session) {
  return session == nullptr ? 0 : session->session->max_batch();
}

const char* ember_last_error(void) { return last_error.c_str(); }

void ember_session_destroy(ember_session* session) { delete session; }

}  // extern "C"
