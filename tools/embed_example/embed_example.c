/* Classifies images with a trained checkpoint through ember's C API alone, as a server
 * written in C would:
 *
 *   embed_example CHECKPOINT [IMAGES]
 *
 * IMAGES is an IDX file of 8-bit grey images (raw or gzipped, e.g. Fashion-MNIST's
 * t10k-images-idx3-ubyte.gz); the first max_batch images are classified in one batch.
 * Without it, a few generated images are. Prints "image I: class C (logit L)" per image.
 */
#include <ember.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { max_batch = 8, generated_images = 4 };

/* Reads up to `limit` images of an IDX file (big-endian header: 0, 0, type 0x08, rank 3,
 * then count, rows, columns as 32-bit values). Returns the pixels (malloc'd) or NULL with
 * a message on stderr. gzread reads uncompressed files too. */
static unsigned char* read_idx_images(const char* path, int64_t limit, int64_t* count, int64_t* rows, int64_t* columns) {
  gzFile file = gzopen(path, "rb");
  unsigned char header[16];
  if (file == NULL) {
    fprintf(stderr, "%s: cannot open\n", path);
    return NULL;
  }
  if (gzread(file, header, sizeof header) != (int)sizeof header || header[0] != 0 || header[1] != 0 ||
      header[2] != 0x08 || header[3] != 3) {
    fprintf(stderr, "%s: not an IDX file of 8-bit images (expected the header 00 00 08 03)\n", path);
    gzclose(file);
    return NULL;
  }
  int64_t dims[3];
  for (int i = 0; i < 3; ++i) {
    const unsigned char* d = header + 4 + 4 * i;
    dims[i] = ((int64_t)d[0] << 24) | ((int64_t)d[1] << 16) | ((int64_t)d[2] << 8) | (int64_t)d[3];
  }
  *count = dims[0] < limit ? dims[0] : limit;
  *rows = dims[1];
  *columns = dims[2];
  const size_t bytes = (size_t)(*count * *rows * *columns);
  unsigned char* pixels = malloc(bytes > 0 ? bytes : 1);
  if (pixels == NULL || gzread(file, pixels, (unsigned)bytes) != (int)bytes) {
    fprintf(stderr, "%s: expected %lld images of %lldx%lld pixels, the file is shorter\n", path, (long long)*count,
            (long long)*rows, (long long)*columns);
    free(pixels);
    pixels = NULL;
  }
  gzclose(file);
  return pixels;
}

/* Fills `input` (count samples of shape (1, height, width)) the way the model was
 * trained: each pixel p as (p / 255 - mean) / std, the image centred, black around it. */
static void normalize_images(float* input, const unsigned char* pixels, int64_t count, int64_t rows, int64_t columns,
                             int64_t height, int64_t width, float mean, float std) {
  const int64_t top = (height - rows) / 2, left = (width - columns) / 2;
  for (int64_t i = 0; i < count * height * width; ++i) input[i] = -mean / std;
  for (int64_t n = 0; n < count; ++n) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < columns; ++c) {
        const float p = pixels[(n * rows + r) * columns + c] / 255.0f;
        input[(n * height + r + top) * width + c + left] = (p - mean) / std;
      }
    }
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s CHECKPOINT [IMAGES]\n", argv[0]);
    return 2;
  }
  char error[512];
  ember_session* session = ember_session_create(argv[1], max_batch, error, sizeof error);
  if (session == NULL) {
    fprintf(stderr, "ember: %s\n", error);
    return 1;
  }
  int64_t shape[3];
  float mean = 0.0f, std = 1.0f;
  const int rank = ember_session_input_shape(session, shape, 3);
  ember_session_input_normalization(session, &mean, &std);
  if (rank != 3 || shape[0] != 1) {
    fprintf(stderr, "%s: this example feeds grey images, (1, H, W); the model takes a rank-%d input\n", argv[1], rank);
    ember_session_destroy(session);
    return 1;
  }
  int64_t count = generated_images, rows = shape[1], columns = shape[2];
  unsigned char* pixels = NULL;
  if (argc == 3) {
    pixels = read_idx_images(argv[2], max_batch, &count, &rows, &columns);
  } else if ((pixels = malloc((size_t)(count * rows * columns))) == NULL) {
    fprintf(stderr, "out of memory\n");
  } else {
    for (int64_t i = 0; i < count * rows * columns; ++i) pixels[i] = (unsigned char)(i * 37 % 256);
  }
  int status = 1;
  float* input = NULL;
  float* output = NULL;
  if (pixels == NULL) goto done; /* read_idx_images said why */
  if (count < 1 || rows > shape[1] || columns > shape[2]) {
    fprintf(stderr, "%s: %lld images of %lldx%lld; the model takes 1 or more images of at most %lldx%lld\n", argv[2],
            (long long)count, (long long)rows, (long long)columns, (long long)shape[1], (long long)shape[2]);
    goto done;
  }
  const int64_t in = ember_session_input_elements(session), out = ember_session_output_elements(session);
  input = malloc((size_t)(count * in) * sizeof(float));
  output = malloc((size_t)(count * out) * sizeof(float));
  if (input == NULL || output == NULL) {
    fprintf(stderr, "out of memory\n");
    goto done;
  }
  normalize_images(input, pixels, count, rows, columns, shape[1], shape[2], mean, std);
  if (ember_session_run(session, input, (size_t)(count * in), count, output, (size_t)(count * out)) != 0) {
    fprintf(stderr, "ember: %s\n", ember_last_error());
    goto done;
  }
  for (int64_t n = 0; n < count; ++n) {
    const float* logits = output + n * out;
    int64_t best = 0;
    for (int64_t c = 1; c < out; ++c) {
      if (logits[c] > logits[best]) best = c;
    }
    printf("image %lld: class %lld (logit %.3f)\n", (long long)n, (long long)best, logits[best]);
  }
  status = 0;
done:
  free(output);
  free(input);
  free(pixels);
  ember_session_destroy(session);
  return status;
}
