// A warm InferenceSession::run allocates nothing in ember's code (docs/architecture.md,
// "Data flow of a session call"; engine/session.h), for the built-in CNN and attention
// models.
//
// This executable replaces every global operator new and interposes malloc, calloc,
// realloc and the aligned allocators. While counting is on, each call records a backtrace
// and is charged to whose code asked for the memory: walking out from the allocation
// function's caller, the first frame in libdnnl charges oneDNN (2.6 allocates inside
// dnnl_memory_create and dnnl_primitive_execute: out of ember's reach), the first in
// libgomp charges OpenMP, the first in libember (or in this executable, where a static
// build links ember) charges ember; frames in libstdc++ or libc are skipped. The innermost
// frame decides, not any frame: oneDNN's and libgomp's allocations have ember's frames
// further out, and ember's code run inside an OpenMP region has a libgomp frame further
// out (libember must be recognized: walking past it would charge such an allocation to
// OpenMP, whose count need not be 0). ember's count must be 0; the others must be the same on
// every call of one batch size, so they cannot grow with the calls. A positive control
// shows the count can fail: a call that finds every workspace in use makes one, in
// ember's code, and the counter must charge that to ember.
//
// Its own executable because it replaces the allocation functions of the whole process;
// not built under sanitizers, whose runtimes own malloc.
#include <dlfcn.h>
#include <execinfo.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/model_spec.h"
#include "engine/session.h"

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* pointer, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
}

namespace {

enum Origin { ember_code, onednn, openmp, origin_count };

std::atomic<bool> counting{false};
std::atomic<long> counts[origin_count];
// ember's allocations with a libgomp frame further out: made inside an OpenMP region.
std::atomic<long> ember_inside_openmp{0};
// The hook itself may allocate (dladdr, the unwinder): those calls are not counted.
thread_local bool inside_hook = false;

// The first few of ember's allocations, to print where they come from.
constexpr int max_frames = 64;
constexpr int max_recorded = 16;
struct Backtrace {
  void* frames[max_frames];
  int depth;
};
Backtrace recorded[max_recorded];
std::atomic<int> recorded_count{0};

// The object (executable or shared library) that holds `address`.
const void* object_of(const void* address, const char** name) {
  Dl_info info;
  if (dladdr(address, &info) == 0) return nullptr;
  *name = info.dli_fname != nullptr ? info.dli_fname : "";
  return info.dli_fbase;
}

// `caller`: the return address into the code that called the allocation function.
// `deciding`: the index of the frame that decided.
Origin origin_of(void* const* frames, int depth, const void* caller, int* deciding) {
  const char* name = nullptr;
  const void* executable = object_of(reinterpret_cast<const void*>(&origin_of), &name);
  int first = 0;
  while (first < depth && frames[first] != caller) ++first;
  if (first == depth) first = 0;  // not found: classify from the innermost frame
  for (int i = first; i < depth; ++i) {
    const void* object = object_of(frames[i], &name);
    if (object == nullptr) continue;
    *deciding = i;
    if (object == executable || std::strstr(name, "libember") != nullptr) return ember_code;
    if (std::strstr(name, "libdnnl") != nullptr) return onednn;
    if (std::strstr(name, "libgomp") != nullptr) return openmp;
  }
  *deciding = depth;
  return ember_code;
}

bool libgomp_frame_after(void* const* frames, int depth, int first) {
  const char* name = nullptr;
  for (int i = first; i < depth; ++i) {
    if (object_of(frames[i], &name) != nullptr && std::strstr(name, "libgomp") != nullptr) return true;
  }
  return false;
}

void note_allocation(const void* caller) {
  if (!counting.load(std::memory_order_relaxed) || inside_hook) return;
  inside_hook = true;
  Backtrace trace;
  trace.depth = backtrace(trace.frames, max_frames);
  int deciding = 0;
  const Origin origin = origin_of(trace.frames, trace.depth, caller, &deciding);
  counts[origin].fetch_add(1, std::memory_order_relaxed);
  if (origin == ember_code) {
    if (libgomp_frame_after(trace.frames, trace.depth, deciding + 1)) ember_inside_openmp.fetch_add(1);
    const int slot = recorded_count.fetch_add(1, std::memory_order_relaxed);
    if (slot < max_recorded) recorded[slot] = trace;
  }
  inside_hook = false;
}

void* allocate(std::size_t size, const void* caller) {
  note_allocation(caller);
  void* p = __libc_malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void* allocate_aligned(std::size_t size, std::align_val_t alignment, const void* caller) {
  note_allocation(caller);
  void* p = __libc_memalign(static_cast<std::size_t>(alignment), size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace

#define EMBER_CALLER __builtin_return_address(0)

// glibc's free releases all of these, so the default operator delete forms still match.
extern "C" {
void* malloc(std::size_t size) {
  note_allocation(EMBER_CALLER);
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
  note_allocation(EMBER_CALLER);
  return __libc_calloc(count, size);
}
void* realloc(void* pointer, std::size_t size) {
  note_allocation(EMBER_CALLER);
  return __libc_realloc(pointer, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  note_allocation(EMBER_CALLER);
  return __libc_memalign(alignment, size);
}
void* memalign(std::size_t alignment, std::size_t size) {
  note_allocation(EMBER_CALLER);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  note_allocation(EMBER_CALLER);
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}

void* operator new(std::size_t size) { return allocate(size, EMBER_CALLER); }
void* operator new[](std::size_t size) { return allocate(size, EMBER_CALLER); }
void* operator new(std::size_t size, std::align_val_t alignment) { return allocate_aligned(size, alignment, EMBER_CALLER); }
void* operator new[](std::size_t size, std::align_val_t alignment) { return allocate_aligned(size, alignment, EMBER_CALLER); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, EMBER_CALLER);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, EMBER_CALLER);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  try {
    return allocate_aligned(size, alignment, EMBER_CALLER);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  try {
    return allocate_aligned(size, alignment, EMBER_CALLER);
  } catch (...) {
    return nullptr;
  }
}

namespace ember {
namespace {

struct CallCounts {
  std::int64_t batch = 0;
  long ember = 0, onednn = 0, openmp = 0;
};

template <class Action>
CallCounts count_allocations(std::int64_t batch, Action&& action) {
  for (auto& count : counts) count.store(0);
  counting.store(true);
  action();
  counting.store(false);
  return CallCounts{batch, counts[ember_code].load(), counts[onednn].load(), counts[openmp].load()};
}

// Whether one of the recorded backtraces of ember's allocations passes through `function`
// (a part of its mangled name).
bool recorded_backtrace_passes_through(const char* function) {
  const int recorded_total = std::min(recorded_count.load(), max_recorded);
  bool found = false;
  for (int r = 0; r < recorded_total && !found; ++r) {
    char** symbols = backtrace_symbols(recorded[r].frames, recorded[r].depth);
    for (int f = 0; symbols != nullptr && f < recorded[r].depth && !found; ++f) {
      found = std::strstr(symbols[f], function) != nullptr;
    }
    std::free(symbols);
  }
  return found;
}

void print_recorded_backtraces() {
  const int recorded_total = std::min(recorded_count.load(), max_recorded);
  for (int r = 0; r < recorded_total; ++r) {
    std::fprintf(stderr, "ember allocation %d:\n", r + 1);
    backtrace_symbols_fd(recorded[r].frames, recorded[r].depth, 2);
  }
}

class InferenceSessionAllocations : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    // backtrace() loads libgcc_s (and allocates) on its first call: do that before counting.
    void* frames[1];
    (void)backtrace(frames, 1);
  }
};

TEST_P(InferenceSessionAllocations, WarmCallsAllocateNothingInEmber) {
  constexpr std::int64_t max_batch = 10, calls = 20;
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(GetParam())));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(5);
  SessionOptions options;
  options.max_batch = max_batch;
  options.micro_batch = 4;  // 10 = 4 + 4 + 2: several programs per call
  const InferenceSession session(std::move(graph), std::move(parameters), options);
  const std::int64_t in = session.input_sample_elements(), out = session.output_sample_elements();
  std::vector<float> input(static_cast<std::size_t>(max_batch * in)), output(static_cast<std::size_t>(max_batch * out));
  std::mt19937 random(2);
  std::uniform_real_distribution<float> value(0.0f, 1.0f);
  for (float& x : input) x = value(random);

  // Warm: every program has run once (oneDNN and OpenMP may set things up on first use).
  for (std::int64_t batch = 1; batch <= max_batch; ++batch) session.run(input.data(), batch, output.data());

  recorded_count.store(0);
  std::vector<CallCounts> per_call;
  per_call.reserve(calls);
  for (std::int64_t c = 0; c < calls; ++c) {
    const std::int64_t batch = c % max_batch + 1;
    per_call.push_back(count_allocations(batch, [&] { session.run(input.data(), batch, output.data()); }));
  }

  for (const CallCounts& call : per_call) {
    std::printf("%s batch %2lld: ember %ld, oneDNN %ld, OpenMP %ld\n", GetParam(), static_cast<long long>(call.batch),
                call.ember, call.onednn, call.openmp);
    EXPECT_EQ(call.ember, 0) << "heap allocations in ember's code in a warm call with batch " << call.batch;
    const CallCounts& first = per_call[static_cast<std::size_t>(call.batch - 1)];
    EXPECT_EQ(call.onednn, first.onednn) << "oneDNN's allocations grew between calls with batch " << call.batch;
    EXPECT_EQ(call.openmp, first.openmp) << "OpenMP's allocations grew between calls with batch " << call.batch;
  }
  if (recorded_count.load() > 0) print_recorded_backtraces();
}

// The positive control of the test above, on the same path: callers that arrive together
// at a session with one workspace find it in use, and the session makes more
// (InferenceSession::take_workspace: the workspace, its arena, its flags). Each of those
// is an allocation in ember's code that the counter must see and charge to ember, from
// InferenceSession's code; if it did not, "0 in ember" above would prove nothing.
TEST_P(InferenceSessionAllocations, ACallThatMakesAWorkspaceIsChargedToEmber) {
  constexpr std::int64_t batch = 10;
  constexpr int threads = 8, rounds = 50;
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(GetParam())));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(5);
  SessionOptions options;
  options.max_batch = batch;
  options.micro_batch = 4;
  options.workspaces = 1;
  const InferenceSession session(std::move(graph), std::move(parameters), options);
  const std::int64_t in = session.input_sample_elements(), out = session.output_sample_elements();
  const std::vector<float> input(static_cast<std::size_t>(batch * in), 0.5f);
  {
    std::vector<float> output(static_cast<std::size_t>(batch * out));
    for (std::int64_t b = 1; b <= batch; ++b) session.run(input.data(), b, output.data());
  }

  // Rounds of callers released at once until two calls overlapped; thread start-up and
  // joining stay outside the counted region.
  recorded_count.store(0);
  long ember_allocations = 0;
  for (int round = 0; round < rounds && session.workspace_count() == 1; ++round) {
    std::latch ready(threads + 1), go(1), done(threads + 1);
    std::vector<std::vector<float>> outputs(threads, std::vector<float>(static_cast<std::size_t>(batch * out)));
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&, t] {
        ready.count_down();
        go.wait();
        for (int c = 0; c < 4; ++c) session.run(input.data(), batch, outputs[static_cast<std::size_t>(t)].data());
        done.count_down();
      });
    }
    ready.arrive_and_wait();
    ember_allocations += count_allocations(batch, [&] {
                           go.count_down();
                           done.arrive_and_wait();
                         }).ember;
    for (std::thread& caller : callers) caller.join();
  }
  const std::size_t made = session.workspace_count() - 1;
  std::printf("%s: %zu workspaces made by overlapping calls, %ld allocations charged to ember\n", GetParam(), made,
              ember_allocations);
  ASSERT_GT(made, 0u) << "no two calls overlapped in " << rounds << " rounds of " << threads << " callers";
  EXPECT_GE(ember_allocations, static_cast<long>(made)) << "a workspace made in a call was not charged to ember";
  EXPECT_TRUE(recorded_backtrace_passes_through("InferenceSession"))
      << "no allocation charged to ember came from InferenceSession's code";
}

// The same for ember's code run inside an OpenMP region: making a session prepares each
// step program's layers inside parallel_region (engine/step_program.cpp), and those
// allocations must be charged to ember, not to the libgomp frame further out. If they were
// not, an allocation added inside a region of the warm path would pass as OpenMP's.
TEST_P(InferenceSessionAllocations, EmberCodeInsideAnOpenMPRegionIsChargedToEmber) {
  auto graph = std::make_unique<Graph>(graph_from_spec(builtin_model_spec(GetParam())));
  auto parameters = std::make_unique<ParameterStore>(*graph);
  parameters->initialize(5);
  SessionOptions options;
  options.max_batch = 2;
  options.micro_batch = 2;
  ember_inside_openmp.store(0);
  const CallCounts made = count_allocations(0, [&] { InferenceSession session(std::move(graph), std::move(parameters), options); });
  std::printf("%s: making a session: ember %ld (%ld inside an OpenMP region), oneDNN %ld, OpenMP %ld\n", GetParam(),
              made.ember, ember_inside_openmp.load(), made.onednn, made.openmp);
  EXPECT_GT(ember_inside_openmp.load(), 0) << "no allocation of ember's code inside an OpenMP region was charged to ember";
}

INSTANTIATE_TEST_SUITE_P(Models, InferenceSessionAllocations, ::testing::Values("seed-cnn", "attn-cnn"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace ember
