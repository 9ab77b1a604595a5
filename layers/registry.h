#pragma once
// Builds a layer from its kind and options (the model spec's "kind" and the layer's
// JSON object). Every layer kind in layers/ is listed in registry.cpp.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "layers/layer.h"

namespace ember {

// Throws ember::Error naming the kind, or the option, that is wrong.
std::unique_ptr<Layer> make_layer(std::string_view kind, const Json& options);
std::vector<std::string> layer_kinds();

}  // namespace ember
