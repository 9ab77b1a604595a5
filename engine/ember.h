/* ember's C API: load a trained model and run it from C, Go, Python (ctypes) or any
 * language with a C FFI. Valid C99, C11 and C++.
 *
 *   char error[512];
 *   ember_session* s = ember_session_create("model.safetensors", 64, error, sizeof error);
 *   if (!s) { fprintf(stderr, "%s\n", error); ... }
 *   int64_t in = ember_session_input_elements(s), out = ember_session_output_elements(s);
 *   if (ember_session_run(s, input, batch * in, batch, output, batch * out) != 0)
 *     fprintf(stderr, "%s\n", ember_last_error());
 *   ember_session_destroy(s);
 *
 * Errors. No call aborts the process or lets a C++ exception out (out of memory
 * included): a failing call returns NULL or -1 and leaves a message naming the thing,
 * the expected and the found value in ember_last_error().
 *
 * Threads. ember_session_run and the ember_session_* queries may be called on one
 * session from any number of threads at once (weights are shared read-only; each call
 * takes its own workspace). ember_session_destroy must not run while another call on
 * that session is in progress or after it; the caller orders that. Sessions are
 * independent of each other.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define EMBER_API __attribute__((visibility("default")))
#else
#define EMBER_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ember_session ember_session;

/* The library's version, "MAJOR.MINOR.PATCH". Static storage; never fails. */
EMBER_API const char* ember_version(void);

/* Loads a checkpoint written by `ember train --save` and prepares it for batches of
 * 1..max_batch samples. A path ending in ".onnx" is imported from ONNX instead (a model
 * exported by PyTorch or by ember_export_onnx; engine/onnx_import.h lists the operators). On failure returns NULL, sets ember_last_error() and, if error is
 * not NULL, also copies the message there (truncated to error_size - 1 characters). */
EMBER_API ember_session* ember_session_create(const char* checkpoint_path, int64_t max_batch, char* error,
                                              size_t error_size);

/* The same with a memory limit: the session never holds more than memory_limit_bytes for
 * weights and workspaces. A checkpoint whose model needs more is refused (NULL, with the
 * figure and the limit in the message) before its buffers are allocated, and concurrent
 * calls beyond what the limit allows wait for a workspace instead of allocating another.
 * 0 means the machine's available memory, which is what ember_session_create uses. */
EMBER_API ember_session* ember_session_create_limited(const char* checkpoint_path, int64_t max_batch,
                                                      uint64_t memory_limit_bytes, char* error, size_t error_size);

/* Runs `batch` samples (1..ember_session_max_batch()). input holds exactly
 * batch * ember_session_input_elements() floats, batch-major; output has room for at least
 * batch * ember_session_output_elements() floats and receives the model's outputs (logits
 * for a classifier). Returns 0 on success; -1, writing nothing to output, when a pointer is
 * NULL or a size does not match (the message gives the expected and the found value), or
 * when the run fails. */
EMBER_API int ember_session_run(const ember_session* session, const float* input, size_t input_floats, int64_t batch,
                                float* output, size_t output_floats);

/* The shape of one input sample, without the batch dimension: (C, H, W) for images,
 * (T, D) for sequences. Writes the first min(rank, capacity) dimensions to dims (which may
 * be NULL when capacity is 0) and returns the rank; -1 if session is NULL or capacity < 0. */
EMBER_API int ember_session_input_shape(const ember_session* session, int64_t* dims, int capacity);

/* Floats per input sample, floats per output sample, and the largest batch; -1 if session
 * is NULL. */
EMBER_API int64_t ember_session_input_elements(const ember_session* session);
EMBER_API int64_t ember_session_output_elements(const ember_session* session);
EMBER_API int64_t ember_session_max_batch(const ember_session* session);

/* How the model's training data was normalized: image models expect each pixel p in
 * 0..255 as (p / 255 - mean) / std. Writes 0 and 1 when the checkpoint records none.
 * Returns 0, or -1 if a pointer is NULL. */
EMBER_API int ember_session_input_normalization(const ember_session* session, float* mean, float* std);

/* Writes the model of a checkpoint (or of an .onnx file) as an ONNX file (opset 13..17; 0
 * means the default, 17), atomically: ONNX Runtime and other ONNX consumers run it with
 * ember's results. The input normalization is not folded in (the ONNX model takes the
 * normalized input, as a session does); mean and std are stored as the metadata
 * "ember.input_mean" and "ember.input_std". Returns 0, or -1 with the message in
 * ember_last_error() and, if error is not NULL, in error (as ember_session_create). Fails
 * when this ember was built without ONNX support. */
EMBER_API int ember_export_onnx(const char* checkpoint_path, const char* onnx_path, int opset, char* error,
                                size_t error_size);

/* The message of this thread's last failed ember call, "" if that call succeeded. Every
 * function above except ember_version sets it (to "" on success); the text is per thread,
 * so concurrent callers never see each other's errors. The pointer stays valid until the
 * next ember call on the same thread or until the thread exits: copy the text to keep it.
 * Never NULL. */
EMBER_API const char* ember_last_error(void);

/* Frees the session; NULL is ignored. See "Threads" above. */
EMBER_API void ember_session_destroy(ember_session* session);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
