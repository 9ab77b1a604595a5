#pragma once
// Where a step's time goes (`ember bench --profile`): the time of every op of the step
// program and of every phase of the step (forward, loss, backward, lane sum, optimizer),
// with each op's arithmetic and bytes against the machine's peaks (engine/machine_peaks.h).
//
// The executor is given a StepProfile (Executor::profile_into); without one nothing is
// timed and each op costs one branch. Each thread that runs micro-batches owns one
// ThreadProfile and writes only its own, so timing adds no synchronization. Op times are
// busy times, summed over threads; phases are wall times (docs/architecture.md).
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/machine_peaks.h"

namespace ember {

// constants: what layers make of the weights once per training step (Executor's training
// constants, e.g. packed GEMM panels), before any micro-batch runs.
enum class StepPhase { forward, loss, backward, lane_sum, optimizer, constants };
inline constexpr int step_phase_count = 6;
std::string_view step_phase_name(StepPhase phase);

// One op of a step program, as the report names it (StepProgram::profiled_ops).
struct ProfiledOp {
  std::string describe;  // "forward conv1", "backward fc1", ...
  StepPhase phase = StepPhase::forward;
};

// One op's calls, summed over the profiled steps.
struct OpTally {
  std::int64_t nanoseconds = 0;
  std::int64_t calls = 0;
  double flops = 0.0;  // floating-point operations, a multiply-add counting two
  double bytes = 0.0;  // tensors read and written, each once
};

// One thread's tallies, by op index. Only that thread writes it while a step runs.
struct ThreadProfile {
  std::vector<OpTally> ops;
  void add(std::size_t op, std::int64_t nanoseconds, double flops, double bytes) {
    OpTally& t = ops[op];
    t.nanoseconds += nanoseconds;
    t.calls += 1;
    t.flops += flops;
    t.bytes += bytes;
  }
};

// The parts of a step whose wall time the profile takes directly. The micro-batch ops
// (forward, loss, backward and the batch reductions between them) run on every thread at
// once: their wall time is one part, split among the three phases by their busy times.
enum class WallPart { step_ops, lane_sum, optimizer, constants };

class StepProfile {
 public:
  // The ops of the program being profiled and the threads that run them. Called before
  // every profiled batch; the first call (or one with other ops) starts the tallies afresh.
  void prepare(std::span<const ProfiledOp> ops, int threads);
  bool prepared() const { return !ops_.empty(); }
  ThreadProfile& thread(int index) { return threads_[static_cast<std::size_t>(index)]; }
  void add_wall(WallPart part, std::int64_t nanoseconds, double bytes = 0.0);
  // One whole step, as its caller timed it (the remainder is what no part accounts for).
  void add_step(std::int64_t nanoseconds) {
    step_nanoseconds_ += nanoseconds;
    ++steps_;
  }

  std::span<const ProfiledOp> ops() const { return ops_; }
  std::span<const ThreadProfile> threads() const { return threads_; }
  std::int64_t steps() const { return steps_; }
  std::int64_t step_nanoseconds() const { return step_nanoseconds_; }
  std::int64_t wall_nanoseconds(WallPart part) const { return wall_[static_cast<std::size_t>(part)]; }
  double wall_bytes(WallPart part) const { return wall_bytes_[static_cast<std::size_t>(part)]; }

 private:
  std::vector<ProfiledOp> ops_;
  std::vector<ThreadProfile> threads_;
  std::int64_t wall_[4] = {};  // by WallPart
  double wall_bytes_[4] = {};
  std::int64_t step_nanoseconds_ = 0;
  std::int64_t steps_ = 0;
};

// Adds the wall time of its scope to `profile` (nothing when null).
class ScopedWall {
 public:
  ScopedWall(StepProfile* profile, WallPart part, double bytes = 0.0)
      : profile_(profile), part_(part), bytes_(bytes), start_(profile != nullptr ? now() : Clock::time_point{}) {}
  ~ScopedWall() {
    if (profile_ != nullptr) profile_->add_wall(part_, elapsed_nanoseconds(start_), bytes_);
  }
  ScopedWall(const ScopedWall&) = delete;
  ScopedWall& operator=(const ScopedWall&) = delete;

  using Clock = std::chrono::steady_clock;
  static Clock::time_point now() { return Clock::now(); }
  static std::int64_t elapsed_nanoseconds(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  }

 private:
  StepProfile* profile_;
  WallPart part_;
  double bytes_;
  Clock::time_point start_;
};

// The profile per step, ready to print.
struct ProfileReport {
  struct Op {
    std::string describe;
    std::string phase;
    double busy_ms = 0.0;        // per step, summed over threads
    double percent = 0.0;        // of the threads' time: busy_ms / (step_ms * threads)
    double calls = 0.0;          // per step (one per micro-batch)
    double gflop = 0.0;          // per step; 0: the op states none
    double megabytes = 0.0;      // per step
    double gflops_per_second = 0.0;
    double gigabytes_per_second = 0.0;
    double peak_flops_fraction = 0.0;      // of one core's FMA peak (an op runs on one core)
    double peak_bandwidth_fraction = 0.0;  // of one core's streaming bandwidth
  };
  struct Phase {
    std::string name;  // forward, loss, backward, lane sum, optimizer, other
    double wall_ms = 0.0;
    double percent = 0.0;  // of the step
    double gigabytes_per_second = 0.0;  // lane sum, optimizer: their nominal traffic; else 0
  };
  MachinePeaks peaks;
  int threads = 1;
  std::int64_t steps = 0;
  double step_ms = 0.0;  // mean wall time of a profiled step
  // Per step: the wall time of the micro-batch ops (forward, loss, backward) and their
  // busy time summed over threads; busy / (wall x threads) is how well the threads were used.
  double ops_wall_ms = 0.0;
  double ops_busy_ms = 0.0;
  std::vector<Op> ops;   // in program order
  std::vector<Phase> phases;
};

ProfileReport make_profile_report(const StepProfile& profile, const MachinePeaks& peaks);
// A table for people: the peaks, the phases, then one line per op.
std::string format_profile_table(const ProfileReport& report);
// {"peaks": {...}, "step_ms": ..., "phases": [...], "ops": [...]}
nlohmann::json profile_json(const ProfileReport& report);

}  // namespace ember
