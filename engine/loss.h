#pragma once
// Losses: the last op of a training step. A loss reads the predictions of some rows (a
// whole batch or one micro-batch of it) and their targets, returns the *sum* of the
// per-sample losses over those rows, and writes the gradient of (loss sum * grad_scale)
// with respect to the predictions.
//
// Reduction: the executor passes grad_scale = 1 / B for a batch of B samples, so the
// gradients that micro-batches write add up to the gradient of the batch-mean loss
// (PyTorch's reduction='mean'), and StepResult::mean_loss() = loss_sum / B is the loss
// PyTorch reports. Every row is computed the same way whichever micro-batch it falls in,
// so per-row losses and gradient rows are bitwise identical for any micro-batch split.
//
// A Loss is immutable after construction and keeps no scratch of its own: many threads
// call compute() on one Loss at once. In a step program the loss is an op like the others,
// its scratch planned with the step's tensors.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "engine/tensor.h"

namespace ember {

// The targets of a batch (or of the rows of one micro-batch).
struct Targets {
  // One class index per row (classification losses).
  std::span<const std::int32_t> labels;
  // Values with the predictions' layout, row-major (regression losses); null if absent.
  const float* values = nullptr;
};

struct LossResult {
  double loss_sum = 0.0;     // sum over the rows of the per-sample loss
  std::int64_t correct = 0;  // rows whose top-1 prediction is the label (0 for regression)
};

class Loss {
 public:
  virtual ~Loss() = default;

  // predictions: plain row-major, rows = shape[0].
  // gradient: null (loss only) or a buffer of predictions.elements() floats that is
  // overwritten with d(loss_sum * grad_scale) / d(predictions). It must not alias the
  // predictions.
  // scratch: when `gradient` is null, predictions.elements() floats the loss may use
  // (every loss needs at most that); ignored otherwise.
  virtual LossResult compute(const Tensor& predictions, const Targets& targets, float grad_scale, float* gradient,
                             float* scratch) const = 0;
  // The same, with scratch of its own when it needs some (callers outside a step program).
  LossResult compute(const Tensor& predictions, const Targets& targets, float grad_scale, float* gradient) const;
  // "cross_entropy", "mse"
  virtual std::string_view name() const = 0;
  // Whether compute() reads Targets::labels (else Targets::values).
  virtual bool uses_labels() const = 0;
};

// Softmax cross-entropy over logits (rows x classes), PyTorch's
// nn.CrossEntropyLoss(label_smoothing=epsilon). Per row r with label y and
// log p = log_softmax(logits[r]):
//   loss_r = (1 - epsilon) * (-log p[y]) + epsilon * (1 / C) * sum over c of (-log p[c])
//   d loss_r / d logits[r][c] = p[c] - q[c],  q = (1 - epsilon) * onehot(y) + epsilon / C
// Labels outside [0, C) are an error naming the row, the label and C.
class CrossEntropyLoss final : public Loss {
 public:
  explicit CrossEntropyLoss(float label_smoothing = 0.0f);

  using Loss::compute;
  LossResult compute(const Tensor& predictions, const Targets& targets, float grad_scale, float* gradient,
                     float* scratch) const override;
  std::string_view name() const override { return "cross_entropy"; }
  bool uses_labels() const override { return true; }
  float label_smoothing() const { return label_smoothing_; }

 private:
  float label_smoothing_;
};

// Mean squared error, PyTorch's nn.MSELoss(reduction='mean'): the mean over *every
// element* of the batch of (y - t)^2. Predictions and targets have any shape (N, ...)
// with E = elements per row. The per-sample loss is the row mean
//   loss_r = (1 / E) * sum over e of (y[r][e] - t[r][e])^2
// so loss_sum / N (the executor's mean) is the mean over all N * E elements, and
//   d (loss_sum * grad_scale) / d y[r][e] = grad_scale * 2 * (y[r][e] - t[r][e]) / E
// which with grad_scale = 1 / N is PyTorch's 2 * (y - t) / (N * E).
class MeanSquaredErrorLoss final : public Loss {
 public:
  using Loss::compute;
  LossResult compute(const Tensor& predictions, const Targets& targets, float grad_scale, float* gradient,
                     float* scratch) const override;
  std::string_view name() const override { return "mse"; }
  bool uses_labels() const override { return false; }
};

// "cross_entropy" (label_smoothing applies) or "mse"; any other name is an error that
// lists the valid ones.
std::unique_ptr<Loss> make_loss(std::string_view name, float label_smoothing = 0.0f);

}  // namespace ember
