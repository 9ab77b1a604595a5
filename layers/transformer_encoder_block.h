#pragma once
// TransformerEncoderBlock, pre-norm (as nn.TransformerEncoderLayer(norm_first=True,
// activation="gelu", batch_first=True)):
//
//   h = x + Dropout(MultiHeadAttention(LayerNorm(x)))
//   y = h + Dropout(Linear2(GELU(Linear1(LayerNorm(h)))))
//
// It is a composite: the model spec expands a layer of kind "transformer_encoder_block"
// into those layers, named "<name>.norm1", "<name>.attention", ..., with the block's last
// Add named "<name>" so later layers refer to the block by its name. A spec written back
// from the graph lists the expanded layers, which rebuild the same graph.
//
// Options: d_model, heads, mlp_hidden (default 4 d_model), causal (false),
// dropout (0), gelu ("none" | "tanh"), eps (LayerNorm, 1e-5).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ember {

inline constexpr const char* transformer_encoder_block_kind = "transformer_encoder_block";

// The expanded layer objects, in order. `input` is the block's input value name; `options`
// are the block's options (name, kind and inputs removed). Throws ember::Error naming the
// option that is wrong.
std::vector<nlohmann::json> expand_transformer_encoder_block(const std::string& name, const std::string& input,
                                                             const nlohmann::json& options);

}  // namespace ember
