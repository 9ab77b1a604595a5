// The memory plan of whole steps: every built-in model meets the arena target, and on
// random DAGs the plan is valid and reusing memory (and running layers in place) changes
// no output and no gradient, bit for bit, against a plan that gives every tensor its own
// memory.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/step_program.h"
#include "layers/registry.h"

namespace ember {
namespace {

struct PlanCase {
  const char* model;
  Mode mode;
  std::int64_t micro_batch;
};

std::string case_name(const ::testing::TestParamInfo<PlanCase>& info) {
  std::string name = std::string(info.param.model) + (info.param.mode == Mode::training ? "_training_" : "_inference_") +
                     std::to_string(info.param.micro_batch);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class BuiltInModelPlan : public ::testing::TestWithParam<PlanCase> {};

// The target: arena <= 1.10 x the largest total of bytes live at one time.
TEST_P(BuiltInModelPlan, ArenaIsWithinTenPercentOfTheLowerBound) {
  const PlanCase c = GetParam();
  const Graph graph = graph_from_spec(builtin_model_spec(c.model));
  ParameterStore parameters(graph);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const StepProgram program(graph, parameters, c.micro_batch, c.mode, engine, PlanStrategy::best_fit);
  const StepPlanReport& report = program.report();
  ASSERT_NO_THROW(validate_memory_plan(report.tensors, report.plan));
  const double ratio = static_cast<double>(report.plan.arena_bytes) / static_cast<double>(report.plan.lower_bound_bytes);
  std::printf("%s %s batch %lld: arena %zu, naive %zu, lower bound %zu (%.3fx)\n", c.model,
              c.mode == Mode::training ? "training" : "inference", static_cast<long long>(c.micro_batch),
              report.plan.arena_bytes, report.plan.naive_bytes, report.plan.lower_bound_bytes, ratio);
  EXPECT_GE(report.plan.arena_bytes, report.plan.lower_bound_bytes);
  EXPECT_LE(ratio, 1.10);
  EXPECT_LT(report.plan.arena_bytes, report.plan.naive_bytes);
}

std::vector<PlanCase> built_in_cases() {
  std::vector<PlanCase> cases;
  for (const char* model : {"seed-cnn", "lenet", "attn-cnn", "attention-mse", "resnet"}) {
    for (Mode mode : {Mode::inference, Mode::training}) {
      for (std::int64_t batch : {1, 64, 256}) cases.push_back({model, mode, batch});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Models, BuiltInModelPlan, ::testing::ValuesIn(built_in_cases()), case_name);

TEST(BuiltInModelPlan, EveryBuiltInModelIsCovered) {
  for (const std::string& name : builtin_model_names()) {
    bool covered = false;
    for (const PlanCase& c : built_in_cases()) covered = covered || name == c.model;
    EXPECT_TRUE(covered) << name << " has no plan test";
  }
}

// Random DAGs of image layers: convolutions, ReLUs, sums of branches, dropout and pooling,
// then a linear head. Values may feed several layers or none.
Graph random_dag(std::mt19937& random, int nodes) {
  std::uniform_int_distribution<int> pick(0, 99);
  const std::int64_t size = 6;
  Graph graph(Shape{2, size, size});
  struct Value {
    ValueId id;
    std::int64_t channels, size;
  };
  std::vector<Value> values{{graph.input(), 2, size}};
  auto any_value = [&]() -> const Value& {
    return values[std::uniform_int_distribution<std::size_t>(0, values.size() - 1)(random)];
  };
  auto add = [&](const std::string& kind, const Json& options, std::vector<ValueId> inputs, std::int64_t channels,
                 std::int64_t spatial) {
    const ValueId id = graph.add(kind + std::to_string(graph.nodes().size()), make_layer(kind, options), std::move(inputs));
    values.push_back({id, channels, spatial});
  };
  for (int n = 0; n < nodes; ++n) {
    const Value v = any_value();
    const int choice = pick(random);
    if (choice < 30) {
      const std::int64_t out = std::uniform_int_distribution<std::int64_t>(1, 4)(random);
      add("conv2d", Json{{"in_channels", v.channels}, {"out_channels", out}, {"kernel", 3}, {"padding", 1}}, {v.id}, out,
          v.size);
    } else if (choice < 55 && v.id != graph.input()) {
      add("relu", Json::object(), {v.id}, v.channels, v.size);
    } else if (choice < 80) {
      // A sum of two branches of one shape (the same value twice if there is no other).
      std::vector<const Value*> partners;
      for (const Value& w : values) {
        if (w.channels == v.channels && w.size == v.size) partners.push_back(&w);
      }
      const Value& w = *partners[std::uniform_int_distribution<std::size_t>(0, partners.size() - 1)(random)];
      add("add", Json::object(), {v.id, w.id}, v.channels, v.size);
    } else if (choice < 90) {
      add("dropout", Json{{"p", 0.25}}, {v.id}, v.channels, v.size);
    } else if (v.size >= 2) {
      add("max_pool2d", Json{{"kernel", 2}}, {v.id}, v.channels, v.size / 2);
    }
  }
  const Value last = values.back();
  const ValueId flat = graph.add("flatten", make_layer("flatten", Json::object()), {last.id});
  const ValueId head = graph.add("head", make_layer("linear", Json{{"in_features", last.channels * last.size * last.size},
                                                                   {"out_features", 3}}),
                                 {flat});
  graph.set_output(head);
  return graph;
}

struct StepOutputs {
  std::vector<float> inference;
  std::vector<float> gradients;
  double loss = 0.0;
};

StepOutputs run_steps(const Graph& graph, std::int64_t batch, std::int64_t micro_batch, PlanStrategy strategy,
                      const std::vector<float>& input, const std::vector<float>& targets) {
  ParameterStore parameters(graph);
  parameters.initialize(11);
  ExecutorOptions options;
  options.micro_batch = micro_batch;
  options.plan_strategy = strategy;
  Executor executor(graph, parameters, options);
  StepOutputs out;
  out.inference.resize(static_cast<std::size_t>(batch * executor.output_sample_elements()));
  // Twice, so a reused arena holds the last call's leftovers: a layer that reads memory
  // it never wrote gives a different answer from the fresh, zeroed arena of the naive plan.
  executor.infer(input.data(), batch, out.inference.data());
  executor.infer(input.data(), batch, out.inference.data());
  const MeanSquaredErrorLoss loss;
  executor.train_step(input.data(), batch, Targets{{}, targets.data()}, loss, 5);
  out.loss = executor.train_step(input.data(), batch, Targets{{}, targets.data()}, loss, 5).loss_sum;
  out.gradients.assign(parameters.gradients().begin(), parameters.gradients().end());
  return out;
}

TEST(RandomDagPlan, PlansAreValidAndReuseChangesNoBit) {
  std::mt19937 random(2026);
  int steps_checked = 0;
  double worst_ratio = 1.0;
  for (int trial = 0; trial < 40; ++trial) {
    const Graph graph = random_dag(random, 3 + trial % 12);
    const std::int64_t micro_batch = 1 + trial % 3;
    const std::int64_t batch = micro_batch * 2 + 1;
    ParameterStore parameters(graph);
    const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    for (Mode mode : {Mode::inference, Mode::training}) {
      for (PlanStrategy strategy : {PlanStrategy::best_fit, PlanStrategy::best_fit_in_order, PlanStrategy::best_fit_by_size}) {
        const StepProgram program(graph, parameters, micro_batch, mode, engine, strategy);
        const StepPlanReport& report = program.report();
        ASSERT_NO_THROW(validate_memory_plan(report.tensors, report.plan)) << "trial " << trial;
        EXPECT_GE(report.plan.arena_bytes, report.plan.lower_bound_bytes) << "trial " << trial;
        EXPECT_LE(report.plan.arena_bytes, report.plan.naive_bytes) << "trial " << trial;
        if (strategy == PlanStrategy::best_fit) {
          worst_ratio = std::max(worst_ratio, static_cast<double>(report.plan.arena_bytes) /
                                                  static_cast<double>(std::max<std::size_t>(report.plan.lower_bound_bytes, 1)));
        }
      }
    }
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    std::vector<float> input(static_cast<std::size_t>(batch * graph.input_sample_shape().elements()));
    std::vector<float> targets(static_cast<std::size_t>(batch * 3));
    for (float& x : input) x = value(random);
    for (float& x : targets) x = value(random);
    const StepOutputs planned = run_steps(graph, batch, micro_batch, PlanStrategy::best_fit, input, targets);
    const StepOutputs naive = run_steps(graph, batch, micro_batch, PlanStrategy::one_slice_each, input, targets);
    EXPECT_EQ(planned.inference, naive.inference) << "trial " << trial;
    EXPECT_EQ(planned.gradients, naive.gradients) << "trial " << trial;
    EXPECT_EQ(planned.loss, naive.loss) << "trial " << trial;
    ++steps_checked;
  }
  std::printf("%d random DAGs, worst arena / lower bound %.3f\n", steps_checked, worst_ratio);
}

}  // namespace
}  // namespace ember
