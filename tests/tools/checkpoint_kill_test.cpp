// SIGKILL `ember train --save` over and over, each time resuming from whatever the kill
// left. After every kill the checkpoint is absent (killed before the first save) or loads,
// never goes back to an earlier step, and holds, byte for byte, what every other kill
// left at the same step; at most one temporary of a killed save lies beside it (the next
// run removes it). Every run that gets to the end must end bitwise where an uninterrupted
// run ends. Half the kills land at a random moment, half a random few milliseconds after
// the checkpoint's directory first changes (a save has begun), so that many land inside
// a save. EMBER_KILL_LOOP_KILLS (default 50) and EMBER_KILL_LOOP_SEED (default 1) set the
// number of kills and the seed of their timing.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/optimizer.h"
#include "engine/training_state.h"
#include "tools/cli_helpers.h"

namespace ember {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::file_bytes;

int environment_integer(const char* name, int fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::atoi(text) : fallback;
}

// `ember <arguments>` as a child process, its output into `log`.
pid_t spawn_ember(const std::vector<std::string>& arguments, const std::string& log) {
  std::vector<std::string> words{EMBER_CLI_PATH};
  words.insert(words.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), ::environ);
  posix_spawn_file_actions_destroy(&actions);
  return error == 0 ? pid : -1;
}

// The child's wait status once it has exited by itself or `until` says so; in the
// second case it is SIGKILLed first.
int kill_when(pid_t pid, const std::function<bool()>& until) {
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (until()) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
  }
  return status;
}

// Whether anything was created in, renamed into or written to the watched directory
// within `milliseconds`.
bool directory_changed(int watch, int milliseconds) {
  pollfd p{watch, POLLIN, 0};
  if (::poll(&p, 1, milliseconds) <= 0) return false;
  char events[4096];
  while (::read(watch, events, sizeof events) > 0) {
  }
  return true;
}

class CheckpointKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/ember-kill-XXXXXX";
    directory_ = ::mkdtemp(pattern);
    testing::write_band_dataset(directory_, 512, 128);
    fs::create_directory(directory_ + "/checkpoints");
  }
  void TearDown() override {
    if (HasFailure()) {
      std::printf("kept %s for inspection\n", directory_.c_str());
    } else {
      fs::remove_all(directory_);
    }
  }

  // seed-cnn: a 9.6 MB checkpoint, so a save takes a good part of a step's time.
  std::vector<std::string> train_arguments(int epochs) const {
    return {"train", "--model", "seed-cnn", "--data", directory_, "--batch-size", "32", "--threads", "1",
            "--seed", "3", "--epochs", std::to_string(epochs)};
  }
  std::string directory_;
};

TEST_F(CheckpointKillTest, SigkillAtRandomMomentsLeavesALoadableCheckpointAndResumingEndsBitwiseTheSame) {
  const int kills_wanted = environment_integer("EMBER_KILL_LOOP_KILLS", 50);
  const int seed = environment_integer("EMBER_KILL_LOOP_SEED", 1);
  const auto started = Clock::now();
  const std::string log = directory_ + "/run.log";
  const std::string log_text_on_failure = "\n(the last run's output is in " + log + ")";

  // The uninterrupted run, saving only after each epoch (16 steps of 32). Its duration sets
  // the window random kills fall in, so that some land late in a run on a slow build
  // (sanitizers) as on a fast one.
  const std::string reference_path = directory_ + "/reference.safetensors";
  long long reference_microseconds = 0;
  {
    std::vector<std::string> arguments = train_arguments(2);
    arguments.insert(arguments.end(), {"--save", reference_path});
    int status = 0;
    const auto reference_started = Clock::now();
    const pid_t pid = spawn_ember(arguments, log);
    ASSERT_GT(pid, 0);
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << file_bytes(log);
    reference_microseconds = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - reference_started).count();
  }
  const std::string reference = file_bytes(reference_path);

  // The checkpoint alone in its directory, so that anything else there is a temporary.
  const std::string checkpoints = directory_ + "/checkpoints";
  const std::string name = "model.safetensors";
  const std::string checkpoint = checkpoints + "/" + name;
  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, checkpoints.c_str(), IN_CREATE | IN_MODIFY | IN_MOVED_TO), 0);

  std::mt19937 random(static_cast<unsigned>(seed));
  std::map<std::int64_t, std::size_t> hash_at_step;  // every checkpoint a kill left, by step
  std::int64_t resumed_step = -1;  // the step the current chain of runs has reached; -1: no checkpoint
  int kills = 0, inside_a_save = 0, before_the_first_save = 0, finished_runs = 0;
  int kills_in_this_chain = 0;
  while (kills < kills_wanted) {
    std::vector<std::string> arguments = train_arguments(2);
    arguments.insert(arguments.end(), {"--save", checkpoint, "--save-every", "1"});
    if (resumed_step >= 0) arguments.insert(arguments.end(), {"--resume", checkpoint});
    directory_changed(watch, 0);  // forget earlier runs' events
    const pid_t pid = spawn_ember(arguments, log);
    ASSERT_GT(pid, 0);
    const bool aimed_at_a_save = kills % 2 == 1;
    const auto deadline = Clock::now() + std::chrono::microseconds(std::uniform_int_distribution<long long>(0, reference_microseconds)(random));
    const auto delay_in_save = std::chrono::microseconds(std::uniform_int_distribution<int>(0, 30'000)(random));
    std::optional<Clock::time_point> save_seen;
    const int status = kill_when(pid, [&] {
      if (!aimed_at_a_save) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return Clock::now() >= deadline;
      }
      if (!save_seen && directory_changed(watch, 1)) save_seen = Clock::now();
      return save_seen && Clock::now() >= *save_seen + delay_in_save;
    });

    if (WIFEXITED(status)) {  // it finished before the kill
      ASSERT_EQ(WEXITSTATUS(status), 0) << file_bytes(log);
      ++finished_runs;
      EXPECT_TRUE(file_bytes(checkpoint) == reference)
          << "a run killed and resumed " << kills_in_this_chain << " time(s) ended elsewhere than the uninterrupted run";
      std::vector<std::string> left;
      for (const auto& entry : fs::directory_iterator(checkpoints)) left.push_back(entry.path().filename().string());
      EXPECT_EQ(left, std::vector<std::string>{name}) << "a finished run leaves only its checkpoint";
      fs::remove(checkpoint);
      resumed_step = -1;
      kills_in_this_chain = 0;
      continue;
    }
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << file_bytes(log);
    ++kills;
    ++kills_in_this_chain;
    SCOPED_TRACE("kill " + std::to_string(kills) + (aimed_at_a_save ? " (aimed at a save)" : "") +
                 ", EMBER_KILL_LOOP_SEED=" + std::to_string(seed) + log_text_on_failure);

    std::vector<std::string> temporaries;
    for (const auto& entry : fs::directory_iterator(checkpoints)) {
      const std::string file = entry.path().filename().string();
      if (file == name) continue;
      ASSERT_EQ(file.rfind(name + ".tmp-", 0), 0u) << "an unexpected file beside the checkpoint: " << file;
      temporaries.push_back(file);
    }
    ASSERT_LE(temporaries.size(), 1u) << "the temporaries of killed saves must not pile up: each run removes them";
    if (!temporaries.empty() && temporaries.back().rfind(name + ".tmp-" + std::to_string(pid) + "-", 0) == 0) ++inside_a_save;

    if (!fs::exists(checkpoint)) {
      ASSERT_EQ(resumed_step, -1) << "the checkpoint disappeared";
      ++before_the_first_save;
      continue;
    }
    TrainedModel model;
    try {
      model = load_trained_model(checkpoint);
    } catch (const std::exception& e) {
      FAIL() << "the checkpoint a kill left does not load: " << e.what();
    }
    std::unique_ptr<Optimizer> optimizer = make_optimizer("adam", OptimizerOptions{}, *model.parameters);
    TrainingState state;
    try {
      state = load_training_state(checkpoint, *model.parameters, *optimizer);
    } catch (const std::exception& e) {
      FAIL() << "the checkpoint a kill left does not load as a training state: " << e.what();
    }
    ASSERT_GE(state.step, resumed_step) << "the checkpoint went back to an earlier step";
    const std::size_t hash = std::hash<std::string>{}(file_bytes(checkpoint));
    const auto [seen, first_time] = hash_at_step.emplace(state.step, hash);
    EXPECT_EQ(seen->second, hash) << "two kills left different checkpoints at step " << state.step;
    resumed_step = state.step;
  }
  ::close(watch);

  // The last chain of runs, resumed to the end.
  if (resumed_step >= 0) {
    std::vector<std::string> arguments = train_arguments(2);
    arguments.insert(arguments.end(), {"--save", checkpoint, "--save-every", "1", "--resume", checkpoint});
    int status = 0;
    const pid_t pid = spawn_ember(arguments, log);
    ASSERT_GT(pid, 0);
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << file_bytes(log);
    ++finished_runs;
    EXPECT_TRUE(file_bytes(checkpoint) == reference)
        << "the last run killed and resumed " << kills_in_this_chain << " time(s) ended elsewhere than the uninterrupted run";
  }
  EXPECT_GT(finished_runs, 0);
  std::printf("%d kills (%d aimed at a save): %d inside a save (its temporary left), %d before the first save; "
              "%zu distinct steps left by kills; %d resumed run(s) finished, all bitwise equal to the uninterrupted run; "
              "%.1f s\n",
              kills, kills / 2, inside_a_save, before_the_first_save, hash_at_step.size(), finished_runs,
              std::chrono::duration<double>(Clock::now() - started).count());
}

}  // namespace
}  // namespace ember
