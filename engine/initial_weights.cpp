#include "engine/initial_weights.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "engine/error.h"
#include "engine/safetensors.h"
#include "engine/text.h"

namespace ember {
namespace {

std::string dims_text(std::span<const std::int64_t> dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) text += (i > 0 ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

std::vector<std::int64_t> dims_of(const Shape& shape) { return {shape.dims().begin(), shape.dims().end()}; }

bool under_any(const std::string& name, std::span<const std::string> prefixes) {
  return std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return matches_prefix(name, p); });
}

// The layers (names up to their last dot) of the entries, for a message: "conv1, fc1, fc2".
std::string layer_names(const std::vector<ParameterEntry>& entries) {
  std::vector<std::string> layers;
  for (const ParameterEntry& e : entries) {
    const std::string layer = e.name.substr(0, e.name.rfind('.'));
    if (std::find(layers.begin(), layers.end(), layer) == layers.end()) layers.push_back(layer);
  }
  return join(layers, ", ");
}

// One tensor to copy once all are checked: from the file's floats, or a converted count.
struct PlannedCopy {
  std::span<float> to;
  std::span<const float> from;
  float count = 0.0f;
  bool from_count = false;
};

struct Plan {
  std::vector<PlannedCopy> copies;
  std::set<std::string> used;  // file tensors taken
  InitialWeightsReport report;
};

std::span<float> target_of(const ParameterEntry& entry, std::span<float> block) {
  return block.subspan(static_cast<std::size_t>(entry.offset), static_cast<std::size_t>(entry.spec.shape.elements()));
}

// The file's name for the model's tensor: its own, else PyTorch's; empty if neither is there.
std::string name_in_file(const SafetensorsFile& file, const std::string& name) {
  if (file.tensors().count(name) > 0) return name;
  const std::string torch = pytorch_name(name);
  return file.tensors().count(torch) > 0 ? torch : std::string();
}

// PyTorch's BatchNorm keeps num_batches_tracked as an I64 scalar; ember as one float.
bool plan_count(const SafetensorsTensor& tensor, const ParameterEntry& entry, std::span<float> to, Plan& plan) {
  const bool is_count = entry.name.size() >= 20 && entry.name.ends_with(".num_batches_tracked");
  if (!is_count || tensor.dtype != "I64" || tensor.elements() != 1) return false;
  std::int64_t count = 0;
  std::memcpy(&count, tensor.data.data(), sizeof count);
  plan.copies.push_back({to, {}, static_cast<float>(count), true});
  return true;
}

void plan_tensor(const SafetensorsFile& file, const ParameterEntry& entry, std::span<float> block, Plan& plan) {
  const std::vector<std::int64_t> expected = dims_of(entry.spec.shape);
  const std::string name = name_in_file(file, entry.name);
  const std::string hint = "; name it in --init-skip to keep its fresh initialization";
  if (name.empty()) {
    if (entry.name.ends_with(".num_batches_tracked")) return;  // a count a state_dict may lack: 0 stays
    const std::string torch = pytorch_name(entry.name);
    throw Error(file.path() + ": no tensor '" + entry.name + "'" + (torch != entry.name ? " (or '" + torch + "')" : "") +
                " for the model's " + entry.name + ": expected shape " + dims_text(expected) + ", found none" + hint);
  }
  const SafetensorsTensor& tensor = file.tensor(name);
  plan.used.insert(name);
  if (plan_count(tensor, entry, target_of(entry, block), plan)) return;
  if (tensor.dtype != "F32") {
    throw Error(file.path() + ": tensor '" + name + "' (the model's " + entry.name + "): expected dtype F32, found " +
                tensor.dtype + hint);
  }
  const bool same_shape = tensor.shape == expected || (tensor.shape.empty() && tensor.elements() == entry.spec.shape.elements() &&
                                                       expected.size() == 1);
  if (!same_shape) {
    throw Error(file.path() + ": tensor '" + name + "' (the model's " + entry.name + "): expected shape " +
                dims_text(expected) + ", found " + dims_text(tensor.shape) + hint);
  }
  plan.copies.push_back({target_of(entry, block), {reinterpret_cast<const float*>(tensor.data.data()),
                                                   static_cast<std::size_t>(tensor.elements())}});
}

void plan_entries(const SafetensorsFile& file, const std::vector<ParameterEntry>& entries, std::span<float> block,
                  std::span<const std::string> skip, Plan& plan) {
  for (const ParameterEntry& entry : entries) {
    if (under_any(entry.name, skip)) {
      ++plan.report.skipped;
      continue;
    }
    plan_tensor(file, entry, block, plan);
    ++plan.report.loaded;
  }
}

void check_prefixes_match(std::span<const std::string> prefixes, const std::vector<ParameterEntry>& entries,
                          const std::vector<ParameterEntry>& buffers, const std::string& flag) {
  for (const std::string& prefix : prefixes) {
    auto under = [&](const ParameterEntry& e) { return matches_prefix(e.name, prefix); };
    if (std::none_of(entries.begin(), entries.end(), under) && std::none_of(buffers.begin(), buffers.end(), under)) {
      throw Error(flag + ": '" + prefix + "' matches no tensor of the model; expected a layer or tensor name, its layers: " +
                  layer_names(entries));
    }
  }
}

std::int64_t unused_tensors(const SafetensorsFile& file, const std::set<std::string>& used) {
  const auto format = file.metadata().find("format");
  const bool checkpoint = format != file.metadata().end() && format->second == "ember.checkpoint";
  std::int64_t unused = 0;
  for (const auto& [name, tensor] : file.tensors()) {
    if (used.count(name) == 0 && !(checkpoint && name.starts_with("optimizer."))) ++unused;
  }
  return unused;
}

}  // namespace

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> names;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    if (comma > start) names.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

bool matches_prefix(const std::string& name, const std::string& prefix) {
  if (prefix.empty() || !name.starts_with(prefix)) return false;
  return name.size() == prefix.size() || prefix.back() == '.' || name[prefix.size()] == '.';
}

std::string pytorch_name(const std::string& name) {
  for (const char* projection : {"out_proj_weight", "out_proj_bias"}) {
    const std::string suffix = std::string(".") + projection;
    if (name.ends_with(suffix)) {
      return name.substr(0, name.size() - suffix.size()) + ".out_proj." + std::string(projection).substr(9);
    }
  }
  if (name == "position.weight") return "position";
  return name;
}

std::string InitialWeightsReport::text() const {
  return std::to_string(loaded) + " tensors loaded, " + std::to_string(skipped) + " skipped, " + std::to_string(unused) +
         " of the file unused";
}

InitialWeightsReport load_initial_weights(const std::string& path, std::span<const std::string> skip,
                                          ParameterStore& parameters) {
  check_prefixes_match(skip, parameters.entries(), parameters.buffer_entries(), "--init-skip");
  const SafetensorsFile file = SafetensorsFile::read(path);
  Plan plan;
  plan_entries(file, parameters.entries(), parameters.values(), skip, plan);
  plan_entries(file, parameters.buffer_entries(), parameters.buffers(), skip, plan);
  for (const PlannedCopy& copy : plan.copies) {  // all checked: nothing below fails
    if (copy.from_count) std::fill(copy.to.begin(), copy.to.end(), copy.count);
    else std::copy(copy.from.begin(), copy.from.end(), copy.to.begin());
  }
  plan.report.unused = unused_tensors(file, plan.used);
  return plan.report;
}

std::vector<Optimizer::Range> frozen_ranges(const ParameterStore& parameters, std::span<const std::string> prefixes) {
  check_prefixes_match(prefixes, parameters.entries(), {}, "--freeze");
  std::vector<Optimizer::Range> ranges;
  for (const ParameterEntry& entry : parameters.entries()) {
    if (under_any(entry.name, prefixes)) ranges.push_back({entry.offset, entry.offset + entry.spec.shape.elements()});
  }
  std::sort(ranges.begin(), ranges.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  return ranges;
}

void zero_frozen_gradients(std::span<const Optimizer::Range> frozen, ParameterStore& parameters) {
  const std::span<float> gradients = parameters.gradients();
  for (const Optimizer::Range& r : frozen) std::fill(gradients.begin() + r.begin, gradients.begin() + r.end, 0.0f);
}

}  // namespace ember
