#pragma once
// ResidualBlock, the basic block of the CIFAR ResNet (He et al. 2016, section 4.2):
//
//   y = ReLU(BN2(Conv2(ReLU(BN1(Conv1(x))))) + shortcut(x))
//
// Conv1 is 3x3 with the block's stride, Conv2 3x3 with stride 1, both without bias (the
// BatchNorm after each would cancel it). The shortcut is x itself, or, when the stride
// is not 1 or the channel count changes, a 1x1 convolution with the block's stride and
// no bias followed by a BatchNorm (the "projection" shortcut, option B of the paper).
//
// It is a composite: the model spec expands a layer of kind "residual_block" into those
// layers, named "<name>.conv1", "<name>.bn1", "<name>.relu1", "<name>.conv2", "<name>.bn2",
// "<name>.shortcut.conv", "<name>.shortcut.bn", "<name>.add", with the final ReLU named
// "<name>" so later layers refer to the block by its name. The names are PyTorch's
// state_dict names of the same block (tests/pytorch/ember_models.py), so a parameter
// "<name>.conv1.weight" is the same tensor in both. A spec written back from the graph
// lists the expanded layers, which rebuild the same graph.
//
// Options: in_channels, out_channels (default in_channels), stride (1), eps (BatchNorm,
// 1e-5), momentum (BatchNorm, 0.1).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ember {

inline constexpr const char* residual_block_kind = "residual_block";

// The expanded layer objects, in order. `input` is the block's input value name; `options`
// are the block's options (name, kind and inputs removed). Throws ember::Error naming the
// option that is wrong.
std::vector<nlohmann::json> expand_residual_block(const std::string& name, const std::string& input,
                                                  const nlohmann::json& options);

}  // namespace ember
