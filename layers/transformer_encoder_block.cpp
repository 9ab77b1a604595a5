#include "layers/transformer_encoder_block.h"

#include "layers/composite_layers.h"
#include "layers/options.h"

namespace ember {

std::vector<nlohmann::json> expand_transformer_encoder_block(const std::string& name, const std::string& input,
                                                             const nlohmann::json& options) {
  const LayerOptions o(transformer_encoder_block_kind, options, {"d_model", "heads", "mlp_hidden", "causal", "dropout", "gelu", "eps"});
  const std::int64_t d = o.positive_integer("d_model");
  const std::int64_t heads = o.positive_integer("heads", 1);
  const std::int64_t hidden = o.positive_integer("mlp_hidden", 4 * d);
  const bool causal = o.boolean("causal", false);
  const double dropout = o.number("dropout", 0.0, 0.0, 1.0);
  const double eps = o.number("eps", 1e-5, 0.0, 1.0);
  const std::string gelu = options.contains("gelu") && options["gelu"].is_string() ? options["gelu"].get<std::string>() : "none";

  using Json = nlohmann::json;
  CompositeLayers layers(name);
  auto add = [&](const std::string& part, Json layer, const std::vector<std::string>& inputs) {
    return layers.add(part, std::move(layer), inputs);
  };
  std::string x = add("norm1", {{"kind", "layer_norm"}, {"features", d}, {"eps", eps}}, {input});
  x = add("attention", {{"kind", "multi_head_attention"}, {"d_model", d}, {"heads", heads}, {"causal", causal}}, {x});
  if (dropout > 0.0) x = add("dropout1", {{"kind", "dropout"}, {"p", dropout}}, {x});
  const std::string residual = add("residual1", {{"kind", "add"}}, {input, x});
  x = add("norm2", {{"kind", "layer_norm"}, {"features", d}, {"eps", eps}}, {residual});
  x = add("mlp_in", {{"kind", "linear"}, {"in_features", d}, {"out_features", hidden}}, {x});
  x = add("gelu", {{"kind", "gelu"}, {"approximate", gelu}}, {x});
  x = add("mlp_out", {{"kind", "linear"}, {"in_features", hidden}, {"out_features", d}}, {x});
  if (dropout > 0.0) x = add("dropout2", {{"kind", "dropout"}, {"p", dropout}}, {x});
  add("", {{"kind", "add"}}, {residual, x});
  return layers.take();
}

}  // namespace ember
