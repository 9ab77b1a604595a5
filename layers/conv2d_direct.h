#pragma once
// Conv2d's prepared layers on simd's direct kernel (simd/conv.h), for a conv with few input
// channels, stride 1 and no dilation, in plain NCHW (layers/conv2d.cpp decides where):
//   - inference: conv, with a fused ReLU and 2x2 max pool as PrepareContext asks;
//   - training, with a fused 2x2 max pool, for an input that needs no gradient (a
//     network's first conv): the output is the pooled one, and each pooled output's winning
//     window position (1 byte) is saved for backward, which forms the weight and bias
//     gradients from the winners alone (simd/conv_pool_grad.h). It replaces oneDNN's conv,
//     its pool, and the reorders of their blocked layouts, forward and backward.
#include <memory>

#include "layers/conv2d.h"

namespace ember {

std::unique_ptr<PreparedLayer> prepare_direct_conv2d(const Conv2dOptions& options, const PrepareContext& context);

}  // namespace ember
