#include "engine/cpu_count.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "engine/threading.h"

namespace ember {
namespace {

// The leading positive integer of an OMP_NUM_THREADS value ("4" or "4,2"), or 0.
int omp_threads_of(const char* text) {
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || (*end != '\0' && *end != ',') || value < 1) return 0;
  return static_cast<int>(std::min<long>(value, max_compute_threads));
}

int affinity_cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

}  // namespace

int compute_threads_from(const char* omp_num_threads, int affinity_cpus) {
  if (const int omp = omp_threads_of(omp_num_threads); omp > 0) return omp;
  return std::clamp(affinity_cpus, 1, max_compute_threads);
}

int available_compute_threads() { return compute_threads_from(std::getenv("OMP_NUM_THREADS"), affinity_cpu_count()); }

}  // namespace ember
