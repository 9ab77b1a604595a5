#include "layers/registry.h"

#include <map>
#include <string_view>
#include <vector>

#include "engine/error.h"
#include "engine/text.h"
#include "layers/add.h"
#include "layers/attention_pool.h"
#include "layers/batch_norm.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/gelu.h"
#include "layers/global_avg_pool.h"
#include "layers/layer_norm.h"
#include "layers/linear.h"
#include "layers/mean_pool_tokens.h"
#include "layers/multi_head_attention.h"
#include "layers/pool2d.h"
#include "layers/positional_embedding.h"
#include "layers/relu.h"
#include "layers/softmax.h"
#include "layers/tokens_from_feature_map.h"

namespace ember {
namespace {

using Factory = std::unique_ptr<Layer> (*)(const Json&);

const std::map<std::string, Factory, std::less<>>& factories() {
  static const std::map<std::string, Factory, std::less<>> table{
      {"add", &Add::from_options},
      {"attention_pool", &AttentionPool::from_options},
      {"avg_pool2d", &Pool2d::average_from_options},
      {"batch_norm1d", &BatchNorm::from_options_1d},
      {"batch_norm2d", &BatchNorm::from_options_2d},
      {"conv2d", &Conv2d::from_options},
      {"dropout", &Dropout::from_options},
      {"flatten", &Flatten::from_options},
      {"gelu", &Gelu::from_options},
      {"global_avg_pool", &GlobalAvgPool::from_options},
      {"layer_norm", &LayerNorm::from_options},
      {"linear", &Linear::from_options},
      {"max_pool2d", &Pool2d::max_from_options},
      {"mean_pool_tokens", &MeanPoolTokens::from_options},
      {"multi_head_attention", &MultiHeadAttention::from_options},
      {"positional_embedding", &PositionalEmbedding::from_options},
      {"relu", &Relu::from_options},
      {"softmax", &Softmax::from_options},
      {"tokens_from_feature_map", &TokensFromFeatureMap::from_options},
  };
  return table;
}

}  // namespace

std::unique_ptr<Layer> make_layer(std::string_view kind, const Json& options) {
  auto it = factories().find(kind);
  if (it == factories().end()) {
    std::vector<std::string_view> kinds;  // a loop, not std::views::keys: clang 14 (the fuzz build) rejects libstdc++ 12's
    for (const auto& [known, factory] : factories()) kinds.push_back(known);
    throw Error("unknown layer kind '" + std::string(kind) + "'; known kinds: " + join(kinds));
  }
  return it->second(options);
}

std::vector<std::string> layer_kinds() {
  std::vector<std::string> kinds;
  for (const auto& [name, factory] : factories()) kinds.push_back(name);
  return kinds;
}

}  // namespace ember
