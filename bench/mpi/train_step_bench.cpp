// Training-step throughput of data-parallel training (engine/distributed.h), and the
// time each step spends in the gradient exchange, hidden behind the backward and exposed:
//
//   mpirun -np R ember_mpi_train_bench MODEL BATCH THREADS [STEPS] [blocking|overlap] [LANES]
//
// Every rank runs its lanes' micro-batches of the same random global batch; rank 0 prints
// images per second of the global batch (median step) and the exchange's exposed and
// hidden milliseconds (medians over the steps, averaged over the ranks). "blocking" starts the exchange
// only after the backward. Run alone (no mpirun) it times one process.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"

namespace {

int run(int argc, char** argv) {
  using namespace ember;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL BATCH THREADS [STEPS] [blocking|overlap] [LANES]\n", argv[0]);
    return 2;
  }
  const std::string model = argv[1];
  const std::int64_t batch = std::atoll(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int steps = argc > 4 ? std::atoi(argv[4]) : 20;
  const bool overlap = !(argc > 5 && std::string(argv[5]) == "blocking");
  const std::unique_ptr<Communicator> world = world_communicator(120.0, overlap);
  const Json spec = load_model_spec(model);
  const Graph graph = graph_from_spec(spec, model);
  ParameterStore parameters(graph);
  parameters.initialize(0);
  const std::unique_ptr<Loss> loss = make_loss(spec_loss_name(spec));
  const std::int64_t sample = graph.input_sample_shape().elements();
  const auto classes = static_cast<std::int32_t>(graph.value_shape(graph.output()).sample_elements());
  std::mt19937 random(1);
  std::vector<float> input(static_cast<std::size_t>(batch * sample)), values(static_cast<std::size_t>(batch * classes));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (float& x : input) x = std::uniform_real_distribution<float>(0.0f, 1.0f)(random);
  for (float& v : values) v = std::normal_distribution<float>(0.0f, 1.0f)(random);
  for (std::int32_t& y : labels) y = std::uniform_int_distribution<std::int32_t>(0, classes - 1)(random);
  const Targets targets = loss->uses_labels() ? Targets{labels, nullptr} : Targets{{}, values.data()};

  ExecutorOptions options;
  options.threads = threads;
  if (argc > 6) options.gradient_lanes = std::atoi(argv[6]);
  Executor executor(graph, parameters, options);
  executor.distribute_over(world.get());
  std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, parameters);
  std::vector<double> step_ms, exposed_ms, hidden_ms;
  const int warmup = 3;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    executor.train_step(input.data(), batch, targets, *loss, static_cast<std::uint64_t>(i));
    optimizer->step(threads);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (i < warmup) continue;
    step_ms.push_back(ms);
    exposed_ms.push_back(1e3 * world->last_sum_time().exposed_seconds);
    hidden_ms.push_back(1e3 * world->last_sum_time().hidden_seconds);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  // Every rank's medians; rank 0 prints their average.
  const double mine[3] = {median(step_ms), median(exposed_ms), median(hidden_ms)};
  std::vector<double> all(3 * static_cast<std::size_t>(world->size()));
  world->all_gather(mine, sizeof mine, all.data());
  if (world->rank() == 0) {
    double sums[3] = {0, 0, 0};
    for (int r = 0; r < world->size(); ++r) {
      for (int k = 0; k < 3; ++k) sums[k] += all[static_cast<std::size_t>(3 * r + k)] / world->size();
    }
    std::printf("%s batch %lld, %d rank(s) x %d thread(s)%s: %.1f img/s (median step %.2f ms); exchange per step %.2f ms "
                "exposed, %.2f ms hidden; %.2f MB gradient\n",
                model.c_str(), static_cast<long long>(batch), world->size(), threads,
                world->size() > 1 ? (overlap ? ", overlapped" : ", blocking") : "", 1e3 * batch / sums[0], sums[0], sums[1],
                sums[2], 4e-6 * static_cast<double>(parameters.total_floats()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ember_mpi_train_bench: %s\n", e.what());
    return 1;
  }
}
