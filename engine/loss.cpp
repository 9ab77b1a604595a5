#include "engine/loss.h"

#include <cmath>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/text.h"
#include "simd/softmax.h"

namespace ember {

namespace {

void require_plain(std::string_view loss, const Tensor& predictions) {
  if (!predictions.is_plain()) {
    throw Error(std::string(loss) + ": predictions must be plain row-major, found a blocked oneDNN layout for shape " +
                predictions.shape.str());
  }
  if (predictions.shape.rank() < 1) throw Error(std::string(loss) + ": predictions need a batch dimension, found rank 0");
  if (predictions.data == nullptr && predictions.elements() > 0) {
    throw Error(std::string(loss) + ": predictions of shape " + predictions.shape.str() + " have no data");
  }
}

}  // namespace

CrossEntropyLoss::CrossEntropyLoss(float label_smoothing) : label_smoothing_(label_smoothing) {
  // PyTorch accepts label_smoothing in [0, 1].
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
    throw Error("cross_entropy: label smoothing must be in [0, 1], found " + format_number(label_smoothing));
  }
}

LossResult Loss::compute(const Tensor& predictions, const Targets& targets, float grad_scale, float* gradient) const {
  std::vector<float> scratch(gradient == nullptr ? static_cast<std::size_t>(predictions.elements()) : 0);
  return compute(predictions, targets, grad_scale, gradient, scratch.data());
}

LossResult CrossEntropyLoss::compute(const Tensor& predictions, const Targets& targets, float grad_scale,
                                     float* gradient, float* scratch) const {
  require_plain(name(), predictions);
  if (predictions.shape.rank() != 2) {
    throw Error("cross_entropy: predictions must be (rows, classes), found shape " + predictions.shape.str());
  }
  const std::int64_t rows = predictions.shape[0];
  const std::int64_t classes = predictions.shape[1];
  if (classes < 1) throw Error("cross_entropy: predictions must have at least one class, found shape " + predictions.shape.str());
  if (static_cast<std::int64_t>(targets.labels.size()) < rows) {
    throw Error("cross_entropy: " + std::to_string(rows) + " rows of predictions but " +
                std::to_string(targets.labels.size()) + " labels");
  }
  // Check every label before writing anything, so a bad batch leaves the gradient as it was.
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t label = targets.labels[static_cast<std::size_t>(r)];
    if (label < 0 || label >= classes) {
      throw Error("cross_entropy: label " + std::to_string(label) + " of row " + std::to_string(r) +
                  " is outside [0, " + std::to_string(classes) + "): the predictions have " + std::to_string(classes) +
                  " classes");
    }
  }
  LossResult result;
  if (rows == 0) return result;

  // log p goes where the gradient will be (it becomes p - q in place), or into the
  // caller's scratch when only the loss is wanted.
  float* log_probs = gradient != nullptr ? gradient : scratch;
  if (log_probs == nullptr) throw Error("cross_entropy: no gradient buffer and no scratch given");
  const simd::SoftmaxKernels& kernels = simd::softmax_kernels();
  kernels.log_softmax_forward(log_probs, predictions.data, rows, classes);

  const double epsilon = label_smoothing_;
  const auto smooth_target = static_cast<float>(epsilon / static_cast<double>(classes));
  const auto label_target = static_cast<float>(1.0 - epsilon);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* logits = predictions.data + r * classes;
    float* row = log_probs + r * classes;
    const std::int32_t label = targets.labels[static_cast<std::size_t>(r)];

    // Top-1 as torch.argmax: the first index of the maximum.
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < classes; ++c) {
      if (logits[c] > logits[best]) best = c;
    }
    if (best == label) ++result.correct;

    double row_loss = -static_cast<double>(row[label]);
    if (epsilon != 0.0) {
      double log_prob_sum = 0.0;
      for (std::int64_t c = 0; c < classes; ++c) log_prob_sum += row[c];
      row_loss = (1.0 - epsilon) * row_loss - epsilon * log_prob_sum / static_cast<double>(classes);
    }
    result.loss_sum += row_loss;

    if (gradient != nullptr) {
      // p = exp(log p); gradient = grad_scale * (p - q).
      kernels.exp(row, row, classes);
      for (std::int64_t c = 0; c < classes; ++c) row[c] = grad_scale * (row[c] - smooth_target);
      row[label] -= grad_scale * label_target;
    }
  }
  return result;
}

LossResult MeanSquaredErrorLoss::compute(const Tensor& predictions, const Targets& targets, float grad_scale,
                                         float* gradient, float* /*scratch: not needed*/) const {
  require_plain(name(), predictions);
  const std::int64_t rows = predictions.shape[0];
  const std::int64_t row_elements = predictions.shape.sample_elements();
  LossResult result;
  if (rows == 0 || row_elements == 0) return result;
  if (targets.values == nullptr) {
    throw Error("mse: needs target values with the predictions' shape " + predictions.shape.str() + ", found none");
  }
  // The gradient of grad_scale * (1/E) * (y - t)^2 is grad_scale * (2/E) * (y - t).
  const auto coefficient = static_cast<float>(2.0 * static_cast<double>(grad_scale) / static_cast<double>(row_elements));
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* y = predictions.data + r * row_elements;
    const float* t = targets.values + r * row_elements;
    double squares = 0.0;
    for (std::int64_t e = 0; e < row_elements; ++e) {
      const double difference = static_cast<double>(y[e]) - static_cast<double>(t[e]);
      squares += difference * difference;
    }
    result.loss_sum += squares / static_cast<double>(row_elements);
    if (gradient != nullptr) {
      float* g = gradient + r * row_elements;
      for (std::int64_t e = 0; e < row_elements; ++e) g[e] = coefficient * (y[e] - t[e]);
    }
  }
  return result;
}

std::unique_ptr<Loss> make_loss(std::string_view name, float label_smoothing) {
  if (name == "cross_entropy") return std::make_unique<CrossEntropyLoss>(label_smoothing);
  if (name == "mse") {
    if (label_smoothing != 0.0f) {
      throw Error("loss mse takes no label smoothing, found " + format_number(label_smoothing));
    }
    return std::make_unique<MeanSquaredErrorLoss>();
  }
  throw Error("unknown loss '" + std::string(name) + "'; valid losses: cross_entropy, mse");
}

}  // namespace ember
