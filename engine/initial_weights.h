#pragma once
// A training run's own starting weights (ember train --init) and the parameters it keeps
// fixed (--freeze): fine-tuning a checkpoint, or a PyTorch model's state_dict saved as
// safetensors, into a model whose layers have the same names.
//
// Names: a tensor of the model is looked up in the file under its ember name
// ("conv1.weight", "bn1.running_mean"), then under its PyTorch state_dict name where the
// two differ (pytorch_name()). Layouts are PyTorch's (Conv2d [out, in, kh, kw], Linear
// [out, in]), so nothing is transposed. docs/pytorch-weights.md has the whole mapping.
//
// Prefixes (--init-skip, --freeze) match whole dotted name parts: "conv1" matches
// "conv1.weight" and "conv1.bias" but not "conv10.weight"; "block1.attention" matches
// "block1.attention.in_proj_weight"; a full tensor name matches that tensor.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/optimizer.h"
#include "engine/parameters.h"

namespace ember {

// Splits "a,b,c" (a flag's value) into its non-empty items.
std::vector<std::string> split_names(const std::string& list);

// Whether `name` is `prefix` or lies under it (see above).
bool matches_prefix(const std::string& name, const std::string& prefix);

// The PyTorch state_dict name of an ember tensor where they differ, else `name`:
// MultiheadAttention's out projection ("x.out_proj_weight" -> "x.out_proj.weight",
// likewise the bias) and a positional embedding, a bare nn.Parameter in PyTorch
// ("position.weight" -> "position").
std::string pytorch_name(const std::string& name);

struct InitialWeightsReport {
  std::int64_t loaded = 0;   // parameters and buffers copied from the file
  std::int64_t skipped = 0;  // left at their fresh initialization (--init-skip)
  std::int64_t unused = 0;   // tensors of the file no model tensor took (optimizer state excluded)
  std::string text() const;  // "12 tensors loaded, 2 skipped, 2 unused"
};

// Copies every parameter and buffer of `parameters` from the safetensors file at `path`
// (an ember checkpoint or a PyTorch state_dict), except those under a `skip` prefix. A
// tensor that is absent, not F32, or of another shape, and a skip prefix that matches no
// tensor, is an ember::Error naming the file, the tensor, the expected and the found;
// everything is checked before anything is copied. A state_dict's num_batches_tracked
// (I64) is converted; where a file has none, the fresh 0 stays.
InitialWeightsReport load_initial_weights(const std::string& path, std::span<const std::string> skip,
                                          ParameterStore& parameters);

// The value-block ranges of the parameters under the `prefixes`, sorted (for
// Optimizer::freeze). A prefix matching no parameter is an ember::Error naming it (and
// the parameters there are).
std::vector<Optimizer::Range> frozen_ranges(const ParameterStore& parameters, std::span<const std::string> prefixes);

// Zeroes the gradients of the frozen ranges, so gradient clipping and the finite check
// see only the trained parameters (as PyTorch, whose frozen parameters have no gradient).
void zero_frozen_gradients(std::span<const Optimizer::Range> frozen, ParameterStore& parameters);

}  // namespace ember
