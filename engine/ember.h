/* ember's C API: load a trained model and run it from C, Go, Python (ctypes) or any
 * language with a C FFI. A session is safe to call from many threads at once.
 *
 *   char error[512];
 *   ember_session* s = ember_session_create("model.safetensors", 64, error, sizeof error);
 *   if (!s) { fprintf(stderr, "%s\n", error); ... }
 *   if (ember_session_run(s, input, batch, output) != 0) fprintf(stderr, "%s\n", ember_last_error());
 *   ember_session_destroy(s);
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ember_session ember_session;

/* Loads a checkpoint and prepares it for batches of 1..max_batch samples. On failure
 * returns NULL and, if error is not NULL, writes a message (truncated to error_size). */
ember_session* ember_session_create(const char* checkpoint_path, int64_t max_batch, char* error, size_t error_size);

/* input: batch * ember_session_input_elements() floats, output: batch *
 * ember_session_output_elements() floats. Returns 0 on success, -1 on failure (see
 * ember_last_error()). */
int ember_session_run(const ember_session* session, const float* input, int64_t batch, float* output);

int64_t ember_session_input_elements(const ember_session* session);
int64_t ember_session_output_elements(const ember_session* session);
int64_t ember_session_max_batch(const ember_session* session);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * ember call on this thread. */
const char* ember_last_error(void);

void ember_session_destroy(ember_session* session);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
