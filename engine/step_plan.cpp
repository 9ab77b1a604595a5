#include "engine/step_plan.h"

#include <algorithm>
#include <memory>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/threading.h"
#include "engine/training_graph.h"

namespace ember {
namespace {

void check_request(const StepPlanRequest& r) {
  if (r.batch < 1) throw Error("plan: batch must be at least 1, found " + std::to_string(r.batch));
  if (r.micro_batch < 0) throw Error("plan: micro-batch must be positive (or 0: auto), found " + std::to_string(r.micro_batch));
  if (r.threads < 1 || r.threads > max_compute_threads) {
    throw Error("plan: threads must be 1 to " + std::to_string(max_compute_threads) + ", found " + std::to_string(r.threads));
  }
  if (r.optimizer != "sgd" && r.optimizer != "sgd-momentum" && r.optimizer != "adam" && r.optimizer != "adamw") {
    throw Error("plan: optimizer must be sgd, sgd-momentum, adam or adamw, found '" + r.optimizer + "'");
  }
}

}  // namespace

StepPlan plan_step(const StepPlanRequest& request) {
  check_request(request);
  StepPlan plan;
  plan.memory_limit = resolve_memory_limit(request.memory_limit);
  const Graph graph = graph_from_spec(load_model_spec(request.model), request.model);
  ParameterLayout layout = parameter_layout(graph);
  const std::int64_t asked = request.micro_batch > 0 ? request.micro_batch
                             : request.training      ? auto_micro_batch(graph, layout.total_floats, request.batch)
                                                     : ExecutorOptions{}.micro_batch;
  plan.micro_batch = std::min(request.batch, asked);
  check_model_memory(graph, layout, plan.micro_batch, plan.memory_limit, request.model);
  const ParameterStore parameters(std::move(layout));
  plan.parameter_count = parameters.parameter_count();
  plan.buffer_count = parameters.buffer_count();

  StepMemoryOptions options;
  options.batch = request.batch;
  options.executor.micro_batch = plan.micro_batch;
  options.executor.threads = request.threads;
  options.mode = request.training ? Mode::training : Mode::inference;
  options.optimizer = request.optimizer == "sgd-momentum" ? "sgd" : request.optimizer;
  options.optimizer_options.momentum = request.optimizer == "sgd-momentum" ? 0.9f : 0.0f;
  plan.memory = estimate_step_memory(graph, parameters, options);

  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  // The graph a step runs in this mode (training moves ReLUs after max pools).
  const std::unique_ptr<Graph> rewritten = request.training ? relu_after_max_pools(graph) : nullptr;
  const StepProgram program(rewritten != nullptr ? *rewritten : graph, parameters, plan.micro_batch, options.mode, engine,
                            options.executor.plan_strategy);
  plan.report = program.report();
  return plan;
}

}  // namespace ember
