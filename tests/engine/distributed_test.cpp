#include "engine/distributed.h"

#include <gtest/gtest.h>

#include <barrier>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "engine/executor.h"
#include "engine/loss.h"
#include "engine/model_spec.h"
#include "engine/parameters.h"
#include "engine/random.h"
#include "simd/elementwise.h"

namespace ember {
namespace {

// Sets an environment variable for one test and restores it.
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnvironment() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(Distributed, EveryMicroBatchRunsOnExactlyOneRank) {
  ExecutorOptions options;
  options.micro_batch = 16;
  for (std::int64_t batch : {1, 16, 40, 64, 100}) {
    for (Mode mode : {Mode::training, Mode::inference}) {
      const BatchLayout layout = batch_layout(options, batch, mode);
      for (int ranks = 1; ranks <= 4; ++ranks) {
        for (std::int64_t j = 0; j < layout.micro_batches; ++j) {
          int runners = 0;
          for (int r = 0; r < ranks; ++r) runners += rank_runs_micro_batch(layout, j, r, ranks) ? 1 : 0;
          EXPECT_EQ(runners, 1) << "batch " << batch << ", micro-batch " << j << ", " << ranks << " ranks";
        }
      }
    }
  }
}

TEST(Distributed, TrainingGivesWholeLanesToRanks) {
  ExecutorOptions options;
  options.micro_batch = 16;
  const BatchLayout layout = batch_layout(options, 160, Mode::training);  // 10 micro-batches, 4 lanes
  for (std::int64_t j = 0; j < layout.micro_batches; ++j) {
    EXPECT_TRUE(rank_runs_micro_batch(layout, j, static_cast<int>((j % 4) % 3), 3)) << "micro-batch " << j;
  }
}

TEST(Distributed, OneRankSumsLanesInLaneOrderAndGathersByCopying) {
  const std::unique_ptr<Communicator> one = single_rank_communicator();
  EXPECT_EQ(one->rank(), 0);
  EXPECT_EQ(one->size(), 1);
  std::vector<std::vector<float>> lanes{{1e8f, 1.0f, 3.0f}, {1.0f, 2.0f, -3.0f}, {-1e8f, 4.0f, 0.5f}};
  std::vector<float> out(3), expected(3);
  std::vector<const float*> pointers{lanes[0].data(), lanes[1].data(), lanes[2].data()};
  simd::elementwise_kernels().sum_lanes(expected.data(), pointers.data(), 3, 3);
  one->sum_lanes(3, pointers, out.data(), 3);
  EXPECT_EQ(std::memcmp(out.data(), expected.data(), sizeof(float) * 3), 0);
  EXPECT_EQ(out[0], 0.0f);  // (1e8 + 1) - 1e8 in float: lane order, not any other
  const double mine[2] = {1.5, -2.0};
  double all[2] = {};
  one->all_gather(mine, sizeof mine, all);
  EXPECT_EQ(all[0], 1.5);
  EXPECT_EQ(all[1], -2.0);
  EXPECT_THROW(one->abort("stop"), Error);
}

TEST(Distributed, MpirunsRankCountIsReadFromTheEnvironment) {
  const ScopedEnvironment size("OMPI_COMM_WORLD_SIZE", "3");
  EXPECT_EQ(launched_rank_count(), 3);
  const ScopedEnvironment bad("OMPI_COMM_WORLD_SIZE", "x");
  const ScopedEnvironment pmi("PMI_SIZE", "1");
  EXPECT_EQ(launched_rank_count(), 1);
}

TEST(Distributed, WithoutMpiALaunchOfSeveralProcessesIsRefused) {
  if (built_with_mpi()) GTEST_SKIP() << "built with MPI: mpirun launches are the tests of label mpi";
  const ScopedEnvironment size("OMPI_COMM_WORLD_SIZE", "2");
  try {
    world_communicator(10.0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built without MPI"), std::string::npos) << e.what();
  }
}

TEST(Distributed, AloneTheWorldIsOneRank) {
  const std::unique_ptr<Communicator> world = world_communicator(10.0);
  EXPECT_EQ(world->size(), 1);
}

// Ranks as threads of one process: what MPI does between processes, done through shared
// memory, so the executor's rank logic is tested in every build.
class ThreadRanks {
 public:
  explicit ThreadRanks(int ranks) : ranks_(ranks), barrier_(ranks), slots_(static_cast<std::size_t>(ranks)) {}
  int size() const { return ranks_; }
  // Every rank's bytes, in rank order, once all have arrived.
  void all_gather(int rank, const void* mine, std::size_t bytes, void* all) {
    slots_[static_cast<std::size_t>(rank)] = mine;
    barrier_.arrive_and_wait();
    for (int r = 0; r < ranks_; ++r) std::memcpy(static_cast<std::byte*>(all) + r * bytes, slots_[static_cast<std::size_t>(r)], bytes);
    barrier_.arrive_and_wait();
  }

 private:
  int ranks_;
  std::barrier<> barrier_;
  std::vector<const void*> slots_;
};

class ThreadRank final : public Communicator {
 public:
  ThreadRank(ThreadRanks& world, int rank) : world_(world), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  void begin_lane_sum(std::int64_t lanes, std::vector<const float*> lane_data, float* out, std::int64_t total,
                      std::vector<std::int64_t>) override {
    lanes_ = lanes;
    lane_data_ = std::move(lane_data);
    out_ = out;
    total_ = total;
  }
  void lane_ready(std::int64_t) override {}
  // Every lane, from the rank that holds it, summed in lane order by every rank.
  void end_lane_sum() override {
    const std::size_t bytes = static_cast<std::size_t>(lanes_ * total_) * sizeof(float);
    std::vector<float> mine(static_cast<std::size_t>(lanes_ * total_));
    for (std::int64_t l = rank_; l < lanes_; l += size()) {
      std::memcpy(mine.data() + l * total_, lane_data_[static_cast<std::size_t>(l)], static_cast<std::size_t>(total_) * sizeof(float));
    }
    std::vector<float> all(mine.size() * static_cast<std::size_t>(size()));
    world_.all_gather(rank_, mine.data(), bytes, all.data());
    std::vector<const float*> lanes(static_cast<std::size_t>(lanes_));
    for (std::int64_t l = 0; l < lanes_; ++l) {
      lanes[static_cast<std::size_t>(l)] = all.data() + static_cast<std::size_t>(lane_rank(l, size())) * mine.size() + l * total_;
    }
    simd::elementwise_kernels().sum_lanes(out_, lanes.data(), lanes_, total_);
  }
  void all_gather(const void* mine, std::size_t bytes, void* all) override { world_.all_gather(rank_, mine, bytes, all); }
  [[noreturn]] void abort(const std::string& message) override { throw Error(message); }

 private:
  ThreadRanks& world_;
  int rank_;
  std::int64_t lanes_ = 0, total_ = 0;
  std::vector<const float*> lane_data_;
  float* out_ = nullptr;
};

struct StepOutcome {
  std::vector<float> gradients, buffers;
  StepResult result;
};

// One training step of `model` on rank `rank` of `world` (null: one process). Each rank
// gets only its own micro-batches' samples; the others are NaN, so reading them shows.
StepOutcome step_on(const std::string& model, ThreadRanks* world, int rank, int threads) {
  const Graph graph = graph_from_spec(load_model_spec(model), model);
  ParameterStore parameters(graph);
  parameters.initialize(3);
  ExecutorOptions options;
  options.threads = threads;
  options.micro_batch = 8;
  const std::int64_t batch = 44;  // 6 micro-batches, the last of 4: lanes 0 and 1 run two
  const std::int64_t sample = graph.input_sample_shape().elements();
  const BatchLayout layout = batch_layout(options, batch, Mode::training);
  std::vector<float> input(static_cast<std::size_t>(batch * sample), std::numeric_limits<float>::quiet_NaN());
  Random random(11);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
  for (std::int64_t i = 0; i < batch; ++i) {
    labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 10);
    const bool mine = world == nullptr || rank_runs_micro_batch(layout, i / options.micro_batch, rank, world->size());
    for (std::int64_t k = 0; k < sample; ++k) {
      const float x = random.uniform();
      if (mine) input[static_cast<std::size_t>(i * sample + k)] = x;
    }
  }
  std::unique_ptr<ThreadRank> communicator = world != nullptr ? std::make_unique<ThreadRank>(*world, rank) : nullptr;
  Executor executor(graph, parameters, options);
  executor.distribute_over(communicator.get());
  const std::unique_ptr<Loss> loss = make_loss("cross_entropy");
  StepOutcome outcome;
  outcome.result = executor.train_step(input.data(), batch, Targets{labels, nullptr}, *loss, 5);
  outcome.gradients.assign(parameters.gradients().begin(), parameters.gradients().end());
  outcome.buffers.assign(parameters.buffers().begin(), parameters.buffers().end());
  return outcome;
}

// Bitwise equality of two float arrays (memcmp, which must not see the null data() of an
// empty vector).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void expect_ranks_match_one_process(const std::string& model) {
  const StepOutcome one = step_on(model, nullptr, 0, 1);
  for (int ranks : {2, 3, 4}) {
    ThreadRanks world(ranks);
    std::vector<StepOutcome> outcomes(static_cast<std::size_t>(ranks));
    std::vector<std::thread> threads;
    std::mutex failure_mutex;
    std::string failure;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        try {
          outcomes[static_cast<std::size_t>(r)] = step_on(model, &world, r, 1 + r % 2);
        } catch (const std::exception& e) {
          const std::lock_guard lock(failure_mutex);
          failure = e.what();
        }
      });
    }
    for (std::thread& t : threads) t.join();
    ASSERT_EQ(failure, "");
    for (int r = 0; r < ranks; ++r) {
      const StepOutcome& o = outcomes[static_cast<std::size_t>(r)];
      ASSERT_EQ(o.gradients.size(), one.gradients.size());
      EXPECT_TRUE(same_bits(o.gradients, one.gradients))
          << model << ": rank " << r << " of " << ranks;
      ASSERT_EQ(o.buffers.size(), one.buffers.size());
      EXPECT_TRUE(same_bits(o.buffers, one.buffers))
          << model << ": running statistics, rank " << r << " of " << ranks;
      EXPECT_EQ(o.result.loss_sum, one.result.loss_sum) << model << ": rank " << r << " of " << ranks;
      EXPECT_EQ(o.result.correct, one.result.correct);
      EXPECT_EQ(o.result.samples, one.result.samples);
    }
  }
}

TEST(Distributed, RanksGiveOneProcesssStepBitwise) { expect_ranks_match_one_process("seed-cnn"); }

TEST(Distributed, RanksGiveOneProcesssBatchStatisticsBitwise) { expect_ranks_match_one_process("resnet"); }

}  // namespace
}  // namespace ember
