#pragma once
// Multi-head self-attention, as torch.nn.MultiheadAttention(d_model, heads, batch_first=True):
//
//   QKV = X W_in^T + b_in                       (one fused projection, N*T rows x 3 d_model)
//   O_h = softmax(Q_h K_h^T / sqrt(D) + mask) V_h   per head h, D = d_model / heads
//   Y   = concat_h(O_h) W_out^T + b_out
//
// Input (N, T, d_model) -> output (N, T, d_model). The attention core is simd/attention's
// fused kernel: no T x T matrix is ever stored; training saves QKV, the concatenated heads
// and one log-sum-exp per query row for backward.
//
// Options: causal (query t sees keys <= t), key_padding_mask (a second input (N, 1) holds
// each sequence's count of valid keys; the rest are masked, as PyTorch's key_padding_mask
// with padding at the end).
#include "layers/layer.h"

namespace ember {

struct MultiHeadAttentionOptions {
  std::int64_t d_model = 0;
  std::int64_t heads = 1;
  bool causal = false;
  bool bias = true;
  bool key_padding_mask = false;
};

class MultiHeadAttention final : public Layer {
 public:
  explicit MultiHeadAttention(const MultiHeadAttentionOptions& options);
  static std::unique_ptr<Layer> from_options(const Json& options);

  std::string_view kind() const override { return "multi_head_attention"; }
  Json options() const override;
  int input_count() const override { return options_.key_padding_mask ? 2 : 1; }
  Shape output_shape(std::span<const Shape> inputs) const override;
  std::vector<ParameterSpec> parameters(std::span<const Shape> inputs) const override;
  std::unique_ptr<PreparedLayer> prepare(const PrepareContext& context) const override;

 private:
  MultiHeadAttentionOptions options_;
};

}  // namespace ember
