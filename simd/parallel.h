#pragma once
// What runs the parts of one kernel call on several threads, when the caller has threads
// of its own (an InferenceSession's workers, engine/worker_pool.h) instead of OpenMP,
// whose team wake-up costs tens of microseconds on a busy machine. A kernel that splits
// its work into parts gives each the same bits whoever runs it, so the result does not
// depend on the runner.
namespace ember::simd {

class PartRunner {
 public:
  using Body = void (*)(void* context, int part);
  // Calls body(context, part) exactly once for every part in [0, parts), on the calling
  // thread and the runner's others, and returns when all have returned.
  virtual void run(int parts, Body body, void* context) const = 0;
  // Threads that may run parts at once, the caller's included.
  virtual int threads() const = 0;

 protected:
  // Defined in simd/parallel.cpp, the class's key function: its type information is then
  // emitted there alone, never in an instruction set's kernel objects (UBSan's vptr check
  // asks for it at each call through a runner).
  virtual ~PartRunner();
};

// run() with a lambda (no allocation: the lambda stays on the caller's stack).
template <class Function>
void run_parts(const PartRunner& runner, int parts, Function& function) {
  runner.run(
      parts, [](void* context, int part) { (*static_cast<Function*>(context))(part); }, &function);
}

}  // namespace ember::simd
