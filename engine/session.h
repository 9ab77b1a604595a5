#pragma once
// InferenceSession: what a server embeds. It loads a model once, plans once for a
// maximum batch, and then runs batches of any size up to that maximum from any number
// of threads at once.
//
// - Weights are shared read-only by every call. A batch_norm2d that follows a conv2d is
//   folded into the conv's weights and bias when the session opens (fold_batch_norm.h).
// - Programs (prepared layers, oneDNN primitives, memory plans) are built at start-up for
//   every micro-batch size 1..micro_batch and never again, so memory stays bounded
//   whatever batch sizes arrive: a batch of 37 runs as 16 + 16 + 5.
// - What layers make of the weights (packed GEMM panels, conv weights in oneDNN's layout)
//   is made once, at start-up, and shared by every micro-batch size and caller.
// - The session owns a budget of compute threads (SessionOptions::threads) that its
//   concurrent callers share: a call runs on its own thread plus as many more as are free.
//   A batch of several micro-batches spreads them over its threads; a smaller one gives
//   them to each layer (GEMM, attention heads), on workers the session keeps running
//   (engine/worker_pool.h). The micro-batches are cut
//   the same way whatever the thread count, and every layer gives the same bits for any
//   thread count, so a call's result does not depend on how many threads it got.
// - Each concurrent call takes a workspace (arena, oneDNN stream) from a pool and gives
//   it back; once the pool holds as many workspaces as there are concurrent callers, a
//   call allocates nothing in ember's code (tests/session_allocations; oneDNN 2.6 itself
//   still allocates a few small objects per primitive execution).
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "engine/graph.h"
#include "engine/parameters.h"

namespace ember {

class StepProgram;  // engine/step_program.h
class WorkerPool;   // engine/worker_pool.h
struct Workspace;   // engine/workspace.h

struct SessionOptions {
  std::int64_t max_batch = 64;
  std::int64_t micro_batch = 16;
  int workspaces = 1;  // created up front; more are made if more callers arrive at once
  // Compute threads the session's calls share (at most max_compute_threads). A caller's
  // own thread counts as one of them.
  int threads = 1;
  // Bytes the session may hold (engine/memory_limit.h; 0: the machine's available memory).
  // Loading and creation refuse a model whose weights and first workspaces exceed it; past
  // it, a call waits for a workspace to come back instead of making another.
  std::size_t memory_limit = 0;
};

class InferenceSession {
 public:
  // Loads a checkpoint written by `ember train --save`, or imports an ONNX model (a path
  // ending in ".onnx": engine/onnx_import.h).
  static std::unique_ptr<InferenceSession> open(const std::string& checkpoint, SessionOptions options = {});
  InferenceSession(std::unique_ptr<Graph> graph, std::unique_ptr<ParameterStore> parameters, SessionOptions options);
  ~InferenceSession();

  // input: batch x input_sample_elements() floats; output: batch x output_sample_elements().
  // Safe to call from many threads at once. Throws ember::Error on a bad batch size.
  void run(const float* input, std::int64_t batch, float* output) const;
  // The same with the sizes checked: input_shape is (batch, input_sample_shape()...) and
  // `input` holds exactly its elements; `output` holds at least batch x
  // output_sample_elements(). Throws ember::Error naming the expected and found shape or size.
  void run(std::span<const float> input, const Shape& input_shape, std::span<float> output) const;

  const Shape& input_sample_shape() const { return graph_->input_sample_shape(); }
  std::int64_t input_sample_elements() const { return graph_->input_sample_shape().elements(); }
  std::int64_t output_sample_elements() const;
  std::int64_t max_batch() const { return options_.max_batch; }
  // Arena bytes one workspace holds (the largest plan among the micro-batch sizes).
  std::size_t arena_bytes() const { return arena_bytes_; }
  std::size_t workspace_count() const;
  // Bytes of what the layers made of the weights once (ForwardArgs::constants).
  std::size_t constant_bytes() const;

 private:
  struct Lease;  // the threads and workspaces of one call

  void make_constants(std::size_t limit, std::size_t weights);
  std::unique_ptr<Workspace> take_workspace(bool wait) const;
  void give_back(std::unique_ptr<Workspace> workspace) const;
  int take_threads(int wanted) const;
  void give_back_threads(int threads) const;
  void run_micro_batches(const float* input, std::int64_t batch, float* output, Lease& lease) const;
  void run_in_phases(const float* input, std::int64_t batch, float* output, Workspace& workspace, int threads) const;

  std::unique_ptr<Graph> graph_;
  std::unique_ptr<ParameterStore> parameters_;
  SessionOptions options_;
  std::unique_ptr<dnnl::engine> engine_;
  std::vector<std::unique_ptr<StepProgram>> programs_;  // index = micro-batch size - 1
  // threads > 1: the same sizes prepared for a call that holds every thread and runs one
  // micro-batch (its big layers' primitives are created for that many threads).
  std::vector<std::unique_ptr<StepProgram>> wide_programs_;
  // With wide programs: threads - 1 workers that run a wide call's layers' parts beside
  // the caller (a call holding every thread is the only one that uses them).
  std::unique_ptr<WorkerPool> workers_;
  std::size_t arena_bytes_ = 0;
  std::vector<AlignedBuffer> constants_;  // one per node and layout (PreparedLayer::constants_key)

  std::size_t max_workspaces_ = 0;  // what the memory limit allows

  mutable std::mutex pool_mutex_;
  mutable std::condition_variable workspace_returned_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_;
  mutable std::size_t workspaces_made_ = 0;
  mutable int threads_in_use_ = 0;  // by calls running now, each counting its caller
};

}  // namespace ember
