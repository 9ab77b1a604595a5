#include "engine/profile.h"

#include <algorithm>
#include <array>
#include <cstdio>

#include "engine/error.h"

namespace ember {

std::string_view step_phase_name(StepPhase phase) {
  switch (phase) {
    case StepPhase::forward: return "forward";
    case StepPhase::loss: return "loss";
    case StepPhase::backward: return "backward";
    case StepPhase::lane_sum: return "lane sum";
    case StepPhase::optimizer: return "optimizer";
    case StepPhase::constants: return "constants";
  }
  return "?";
}

void StepProfile::prepare(std::span<const ProfiledOp> ops, int threads) {
  const bool same_ops = ops.size() == ops_.size() &&
                        std::equal(ops.begin(), ops.end(), ops_.begin(),
                                   [](const ProfiledOp& a, const ProfiledOp& b) { return a.describe == b.describe; });
  if (same_ops && threads_.size() >= static_cast<std::size_t>(threads)) return;
  if (!same_ops) *this = StepProfile{};
  ops_.assign(ops.begin(), ops.end());
  // Threads are only added: a batch with fewer micro-batches may run on fewer of them.
  while (threads_.size() < static_cast<std::size_t>(threads)) threads_.push_back(ThreadProfile{std::vector<OpTally>(ops_.size())});
}

void StepProfile::add_wall(WallPart part, std::int64_t nanoseconds, double bytes) {
  wall_[static_cast<std::size_t>(part)] += nanoseconds;
  wall_bytes_[static_cast<std::size_t>(part)] += bytes;
}

namespace {

double fraction(double value, double peak) { return peak > 0.0 ? value / peak : 0.0; }

ProfileReport::Op make_op(const ProfiledOp& op, const OpTally& sum, double steps, double thread_ms, const MachinePeaks& peaks) {
  ProfileReport::Op r;
  r.describe = op.describe;
  r.phase = std::string(step_phase_name(op.phase));
  r.busy_ms = static_cast<double>(sum.nanoseconds) * 1e-6 / steps;
  r.percent = thread_ms > 0.0 ? 100.0 * r.busy_ms / thread_ms : 0.0;
  r.calls = static_cast<double>(sum.calls) / steps;
  r.gflop = sum.flops * 1e-9 / steps;
  r.megabytes = sum.bytes * 1e-6 / steps;
  if (sum.nanoseconds > 0) {
    r.gflops_per_second = sum.flops / static_cast<double>(sum.nanoseconds);
    r.gigabytes_per_second = sum.bytes / static_cast<double>(sum.nanoseconds);
  }
  r.peak_flops_fraction = fraction(r.gflops_per_second, peaks.fma_gflops_per_core);
  r.peak_bandwidth_fraction = fraction(r.gigabytes_per_second, peaks.memory_gigabytes_per_second);
  return r;
}

}  // namespace

ProfileReport make_profile_report(const StepProfile& profile, const MachinePeaks& peaks) {
  if (profile.steps() < 1 || !profile.prepared()) throw Error("profile: no step was profiled");
  ProfileReport report;
  report.peaks = peaks;
  report.threads = static_cast<int>(profile.threads().size());
  report.steps = profile.steps();
  const auto steps = static_cast<double>(profile.steps());
  report.step_ms = static_cast<double>(profile.step_nanoseconds()) * 1e-6 / steps;
  const double thread_ms = report.step_ms * report.threads;

  std::array<double, step_phase_count> busy{};
  for (std::size_t i = 0; i < profile.ops().size(); ++i) {
    OpTally sum;
    for (const ThreadProfile& t : profile.threads()) {
      sum.nanoseconds += t.ops[i].nanoseconds;
      sum.calls += t.ops[i].calls;
      sum.flops += t.ops[i].flops;
      sum.bytes += t.ops[i].bytes;
    }
    report.ops.push_back(make_op(profile.ops()[i], sum, steps, thread_ms, peaks));
    busy[static_cast<std::size_t>(profile.ops()[i].phase)] += static_cast<double>(sum.nanoseconds);
  }

  // The micro-batch ops' wall time, split among forward, loss and backward by busy time.
  const double ops_wall_ms = static_cast<double>(profile.wall_nanoseconds(WallPart::step_ops)) * 1e-6 / steps;
  const double busy_total = busy[0] + busy[1] + busy[2];
  report.ops_wall_ms = ops_wall_ms;
  report.ops_busy_ms = busy_total * 1e-6 / steps;
  double accounted = 0.0;
  auto add_phase = [&](std::string name, double wall_ms, double bytes) {
    const double gigabytes_per_second = wall_ms > 0.0 ? bytes / steps * 1e-6 / wall_ms : 0.0;
    report.phases.push_back({std::move(name), wall_ms, report.step_ms > 0.0 ? 100.0 * wall_ms / report.step_ms : 0.0,
                             gigabytes_per_second});
    accounted += wall_ms;
  };
  for (StepPhase phase : {StepPhase::forward, StepPhase::loss, StepPhase::backward}) {
    const double share = busy_total > 0.0 ? busy[static_cast<std::size_t>(phase)] / busy_total : 0.0;
    add_phase(std::string(step_phase_name(phase)), ops_wall_ms * share, 0.0);
  }
  const std::pair<StepPhase, WallPart> timed[] = {{StepPhase::lane_sum, WallPart::lane_sum},
                                                  {StepPhase::optimizer, WallPart::optimizer},
                                                  {StepPhase::constants, WallPart::constants}};
  for (const auto& [phase, part] : timed) {
    add_phase(std::string(step_phase_name(phase)), static_cast<double>(profile.wall_nanoseconds(part)) * 1e-6 / steps,
              profile.wall_bytes(part));
  }
  // What no part accounts for: allocation checks, program look-ups, waking threads.
  const double other = std::max(0.0, report.step_ms - accounted);
  report.phases.push_back({"other", other, report.step_ms > 0.0 ? 100.0 * other / report.step_ms : 0.0, 0.0});
  return report;
}

namespace {

std::string format(const char* pattern, auto... values) {
  char line[512];
  std::snprintf(line, sizeof line, pattern, values...);
  return line;
}

}  // namespace

std::string format_profile_table(const ProfileReport& r) {
  std::string out;
  out += format("machine (measured now, one core, %s kernels): FMA peak %.1f GFLOP/s, streaming triad %.1f GB/s\n",
                r.peaks.isa.c_str(), r.peaks.fma_gflops_per_core, r.peaks.memory_gigabytes_per_second);
  out += format("step: %.3f ms (mean of %lld profiled steps), %d thread(s)\n\n", r.step_ms, static_cast<long long>(r.steps),
                r.threads);
  out += "phase       wall ms/step  % of step   GB/s\n";
  for (const ProfileReport::Phase& p : r.phases) {
    out += format("%-11s %12.3f %10.1f", p.name.c_str(), p.wall_ms, p.percent);
    out += p.gigabytes_per_second > 0.0 ? format(" %6.1f\n", p.gigabytes_per_second) : std::string("      -\n");
  }
  out += format("\nforward, loss and backward: %.3f ms of wall time, %.3f ms busy over %d thread(s) (%.0f%% of their time)\n",
                r.ops_wall_ms, r.ops_busy_ms, r.threads,
                r.ops_wall_ms > 0.0 ? 100.0 * r.ops_busy_ms / (r.ops_wall_ms * r.threads) : 0.0);
  out += format("\nops: busy ms per step summed over %d thread(s); %% of the threads' time (step x threads);\n"
                "GFLOP/s and GB/s while the op runs, against one core's peaks (GB/s above 100%%: from cache);\n"
                "bytes: each tensor read or written once\n",
                r.threads);
  out += format("%-36s %9s %6s %5s %8s %8s %6s %8s %7s %6s\n", "op", "ms/step", "%", "calls", "GFLOP", "GFLOP/s", "%peak", "MB",
                "GB/s", "%peak");
  for (const ProfileReport::Op& op : r.ops) {
    out += format("%-36s %9.3f %6.1f %5.0f", op.describe.c_str(), op.busy_ms, op.percent, op.calls);
    if (op.gflop > 0.0) {
      out += format(" %8.4f %8.1f %6.1f", op.gflop, op.gflops_per_second, 100.0 * op.peak_flops_fraction);
    } else {
      out += format(" %8s %8s %6s", "-", "-", "-");
    }
    if (op.megabytes > 0.0) {
      out += format(" %8.2f %7.1f %6.1f\n", op.megabytes, op.gigabytes_per_second, 100.0 * op.peak_bandwidth_fraction);
    } else {
      out += format(" %8s %7s %6s\n", "-", "-", "-");
    }
  }
  return out;
}

nlohmann::json profile_json(const ProfileReport& r) {
  nlohmann::json phases = nlohmann::json::array();
  for (const ProfileReport::Phase& p : r.phases) {
    phases.push_back({{"phase", p.name}, {"wall_ms", p.wall_ms}, {"percent", p.percent}, {"gb_per_s", p.gigabytes_per_second}});
  }
  nlohmann::json ops = nlohmann::json::array();
  for (const ProfileReport::Op& op : r.ops) {
    ops.push_back({{"op", op.describe},
                   {"phase", op.phase},
                   {"busy_ms", op.busy_ms},
                   {"percent", op.percent},
                   {"calls", op.calls},
                   {"gflop", op.gflop},
                   {"gflops_per_s", op.gflops_per_second},
                   {"flops_peak_fraction", op.peak_flops_fraction},
                   {"megabytes", op.megabytes},
                   {"gb_per_s", op.gigabytes_per_second},
                   {"bandwidth_peak_fraction", op.peak_bandwidth_fraction}});
  }
  return {{"peaks",
           {{"isa", r.peaks.isa},
            {"fma_gflops_per_core", r.peaks.fma_gflops_per_core},
            {"memory_gb_per_s", r.peaks.memory_gigabytes_per_second}}},
          {"threads", r.threads},
          {"steps", r.steps},
          {"step_ms", r.step_ms},
          {"ops_wall_ms", r.ops_wall_ms},
          {"ops_busy_ms", r.ops_busy_ms},
          {"times", "phases: wall ms per step; ops: busy ms per step summed over threads"},
          {"phases", phases},
          {"ops", ops}};
}

}  // namespace ember
