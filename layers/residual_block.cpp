#include "layers/residual_block.h"

#include "layers/composite_layers.h"
#include "layers/options.h"

namespace ember {

std::vector<nlohmann::json> expand_residual_block(const std::string& name, const std::string& input,
                                                  const nlohmann::json& options) {
  const LayerOptions o(residual_block_kind, options, {"in_channels", "out_channels", "stride", "eps", "momentum"});
  const std::int64_t in = o.positive_integer("in_channels");
  const std::int64_t out = o.positive_integer("out_channels", in);
  const std::int64_t stride = o.positive_integer("stride", 1);
  const double eps = o.number("eps", 1e-5, 0.0, 1.0);
  const double momentum = o.number("momentum", 0.1, 0.0, 1.0);

  using Json = nlohmann::json;
  CompositeLayers layers(name);
  auto add = [&](const std::string& part, Json layer, const std::vector<std::string>& inputs) {
    return layers.add(part, std::move(layer), inputs);
  };
  auto conv = [&](std::int64_t from, std::int64_t kernel, std::int64_t conv_stride) {
    return Json{{"kind", "conv2d"}, {"in_channels", from},   {"out_channels", out}, {"kernel", kernel},
                {"stride", conv_stride}, {"padding", kernel / 2}, {"bias", false}};
  };
  const Json batch_norm{{"kind", "batch_norm2d"}, {"num_features", out}, {"eps", eps}, {"momentum", momentum}};

  std::string x = add("conv1", conv(in, 3, stride), {input});
  x = add("bn1", batch_norm, {x});
  x = add("relu1", {{"kind", "relu"}}, {x});
  x = add("conv2", conv(out, 3, 1), {x});
  x = add("bn2", batch_norm, {x});
  std::string shortcut = input;
  if (stride != 1 || in != out) {
    shortcut = add("shortcut.conv", conv(in, 1, stride), {input});
    shortcut = add("shortcut.bn", batch_norm, {shortcut});
  }
  x = add("add", {{"kind", "add"}}, {x, shortcut});
  add("", {{"kind", "relu"}}, {x});
  return layers.take();
}

}  // namespace ember
