#pragma once
// The layer list a composite spec kind (residual_block, transformer_encoder_block)
// expands into: each layer is named "<block>.<part>" (the last one just "<block>", so the
// block's output keeps the block's name) and reads the layers it is given.
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ember {

class CompositeLayers {
 public:
  explicit CompositeLayers(std::string block) : block_(std::move(block)) {}

  // Adds `layer` as "<block>.<part>" ("<block>" for an empty part) reading `inputs`;
  // returns its name, for the layers that read it.
  std::string add(const std::string& part, nlohmann::json layer, const std::vector<std::string>& inputs) {
    std::string name = part.empty() ? block_ : block_ + "." + part;
    layer["name"] = name;
    layer["inputs"] = inputs;
    layers_.push_back(std::move(layer));
    return name;
  }
  std::vector<nlohmann::json> take() { return std::move(layers_); }

 private:
  std::string block_;
  std::vector<nlohmann::json> layers_;
};

}  // namespace ember
