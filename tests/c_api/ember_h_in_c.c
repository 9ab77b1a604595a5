/* ember.h from C: this file is compiled as C99 and as C11 with -pedantic-errors -Werror
 * and linked against libember, so a C++-only construct in the header, or a symbol the
 * library does not export with C linkage, fails the build; the calls below check that the
 * C entry points behave as the header says. */
#include <ember.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

static void expect(int condition, const char* what) {
  if (!condition) {
    fprintf(stderr, "FAILED: %s (last error: \"%s\")\n", what, ember_last_error());
    ++failures;
  }
}

int main(void) {
  const char* version = ember_version();
  char error[256] = "unchanged";
  ember_session* session;
  int64_t dims[4];
  float input[1] = {0.0f}, output[1];
  float mean, std;

  expect(version != NULL && version[0] >= '0' && version[0] <= '9' && strchr(version, '.') != NULL,
         "ember_version() is MAJOR.MINOR.PATCH");
  session = ember_session_create("/nonexistent/model.safetensors", 4, error, sizeof error);
  expect(session == NULL, "a missing checkpoint gives NULL");
  expect(strstr(error, "/nonexistent/model.safetensors") != NULL, "the message names the file");
  expect(strcmp(error, ember_last_error()) == 0, "the buffer and ember_last_error() agree");
  expect(ember_session_run(NULL, input, 1, 1, output, 1) == -1, "run refuses a NULL session");
  expect(ember_session_input_shape(NULL, dims, 4) == -1, "input_shape refuses a NULL session");
  expect(ember_session_input_elements(NULL) == -1, "input_elements refuses a NULL session");
  expect(ember_session_output_elements(NULL) == -1, "output_elements refuses a NULL session");
  expect(ember_session_max_batch(NULL) == -1, "max_batch refuses a NULL session");
  expect(ember_session_input_normalization(NULL, &mean, &std) == -1, "input_normalization refuses a NULL session");
  expect(strlen(ember_last_error()) > 0, "a failed call leaves a message");
  error[0] = '\0';
  expect(ember_export_onnx("/nonexistent/model.safetensors", "/nonexistent/model.onnx", 0, error, sizeof error) == -1,
         "export refuses a missing checkpoint");
  expect(strstr(error, "/nonexistent/model") != NULL, "the export's message names the file");
  expect(ember_export_onnx(NULL, "x.onnx", 0, NULL, 0) == -1, "export refuses a NULL path");
  ember_session_destroy(NULL);
  if (failures == 0) printf("ember %s: the C API works from C\n", version);
  return failures == 0 ? 0 : 1;
}
