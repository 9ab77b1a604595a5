#pragma once
// What `ember plan` shows, computed once for every front end (the CLI prints it, the
// Python module returns it as data): the step program's memory plan for one micro-batch
// and the memory of the whole step.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/step_memory.h"
#include "engine/step_program.h"

namespace ember {

struct StepPlanRequest {
  std::string model = "seed-cnn";  // built-in name or JSON spec path
  std::int64_t batch = 16;
  std::int64_t micro_batch = 0;    // 0: as training chooses (auto_micro_batch), 16 in inference
  int threads = 1;
  std::string optimizer = "adam";  // sgd | sgd-momentum | adam | adamw
  bool training = false;
  std::size_t memory_limit = 0;    // 0: the available memory
};

struct StepPlan {
  std::int64_t micro_batch = 0;  // the planned size
  std::size_t memory_limit = 0;  // resolved
  std::int64_t parameter_count = 0, buffer_count = 0;
  StepMemory memory;             // the whole step
  StepPlanReport report;         // one micro-batch: ops, tensors, offsets, lifetimes
};

// Throws ember::Error on a bad request (naming the field, expected and found) or a model
// whose weights alone exceed the memory limit; the step's total is not checked against
// it (check_step_memory), so a caller can show the plan that does not fit.
StepPlan plan_step(const StepPlanRequest& request);

}  // namespace ember
