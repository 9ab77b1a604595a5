// Model specs, memory plans and the machine, as Python data.
#include <omp.h>

#include <algorithm>
#include <string>

#include <oneapi/dnnl/dnnl.hpp>
#include <pybind11/stl.h>

#include "engine/ember.h"
#include "engine/error.h"
#include "engine/model_spec.h"
#include "engine/onnx_export.h"
#include "engine/onnx_import.h"
#include "engine/step_memory.h"
#include "engine/step_plan.h"
#include "engine/threading.h"
#include "python/src/bindings.h"
#include "python/src/json_objects.h"
#include "simd/dispatch.h"

namespace ember::python {
namespace {

py::list tensor_list(const std::vector<TensorLifetime>& tensors, const std::vector<std::string>& shapes, const MemoryPlan& plan) {
  py::list list;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    py::dict t;
    t["name"] = tensors[i].name;
    t["shape"] = shapes[i];
    t["bytes"] = tensors[i].bytes;
    t["offset"] = plan.offsets[i];
    t["first_use"] = tensors[i].first_use;
    t["last_use"] = tensors[i].last_use;
    list.append(t);
  }
  return list;
}

py::dict plan_sizes(const MemoryPlan& plan) {
  py::dict d;
  d["arena_bytes"] = plan.arena_bytes;
  d["naive_bytes"] = plan.naive_bytes;
  d["lower_bound_bytes"] = plan.lower_bound_bytes;
  return d;
}

py::dict step_memory_dict(const StepMemory& m) {
  py::dict d;
  d["parameters"] = m.parameters;
  d["buffers"] = m.buffers;
  d["gradients"] = m.gradients;
  d["gradient_lanes"] = m.gradient_lanes;
  d["optimizer_state"] = m.optimizer_state;
  d["arenas"] = m.arenas;
  d["arena_count"] = m.arena_count;
  d["kept"] = m.kept;
  d["constants"] = m.constants;
  d["total"] = m.total();
  return d;
}

// What `ember plan` prints, as a dict.
py::dict plan(const std::string& model, std::int64_t batch_size, std::int64_t micro_batch, int threads,
              const std::string& optimizer, bool training, std::size_t memory_limit) {
  StepPlanRequest request;
  request.model = model;
  request.batch = batch_size;
  request.micro_batch = micro_batch;
  request.threads = threads;
  request.optimizer = optimizer;
  request.training = training;
  request.memory_limit = memory_limit;
  const StepPlan result = plan_step(request);
  const StepPlanReport& report = result.report;
  py::dict d;
  d["model"] = model;
  d["training"] = training;
  d["batch_size"] = batch_size;
  d["micro_batch"] = result.micro_batch;
  d["ops"] = py::cast(report.ops);
  d["tensors"] = tensor_list(report.tensors, report.shapes, report.plan);
  d["arena"] = plan_sizes(report.plan);
  d["kept_tensors"] = tensor_list(report.kept_tensors, report.kept_shapes, report.kept_plan);
  d["kept"] = plan_sizes(report.kept_plan);
  d["phases"] = report.phases;
  d["fused"] = py::cast(report.fused);
  d["step"] = step_memory_dict(result.memory);
  d["parameter_count"] = result.parameter_count;
  d["memory_limit"] = result.memory_limit;
  return d;
}

py::dict info() {
  py::dict d;
  py::list available;
  for (simd::Isa isa : simd::available_isas()) available.append(std::string(simd::isa_name(isa)));
  const dnnl_version_t* dnnl = dnnl_version();
  d["instruction_set"] = std::string(simd::isa_name(simd::selected_isa()));
  d["available_instruction_sets"] = available;
  d["onednn"] = std::to_string(dnnl->major) + "." + std::to_string(dnnl->minor) + "." + std::to_string(dnnl->patch);
  d["threads"] = omp_get_num_procs();
  d["max_compute_threads"] = max_compute_threads;
  return d;
}

}  // namespace

void bind_models(py::module_& module) {
  module.def("models", &builtin_model_names, "The built-in model names.");
  module.def("load_spec", [](const std::string& name) { return python_object(load_model_spec(name)); }, py::arg("name_or_path"),
             "A model spec as a dict: a built-in model's, or a JSON spec file's (checked).");
  module.def("_check_spec", [](py::handle spec, const std::string& source) {
    (void)graph_from_spec(json_value(spec), source);
  }, py::arg("spec"), py::arg("source"));
  module.def("plan", &plan, py::kw_only(), py::arg("model") = "seed-cnn", py::arg("batch_size") = 16,
             py::arg("micro_batch") = 0, py::arg("threads") = 1, py::arg("optimizer") = "adam",
             py::arg("training") = false, py::arg("memory_limit") = 0,
             "The memory plan of one step, as `ember plan` prints it (micro_batch 0: as training chooses, 16 in inference): the op sequence, every tensor with its shape, "
             "bytes, offset and lifetime, the arena sizes, and the memory of the whole step.");
  module.def("export_onnx", [](const std::string& checkpoint, const std::string& onnx_path, int opset) {
    py::gil_scoped_release release;
    export_checkpoint_onnx(checkpoint, onnx_path, opset);
  }, py::arg("checkpoint"), py::arg("onnx_path"), py::kw_only(), py::arg("opset") = onnx_default_opset,
     "Writes a checkpoint's model as ONNX (as `ember export`): dynamic batch, the input normalization and class "
     "names as metadata. ember.Session also opens .onnx files directly.");
  module.def("import_onnx", [](const std::string& onnx_path, const std::string& checkpoint) {
    py::gil_scoped_release release;
    import_onnx_to_checkpoint(onnx_path, checkpoint);
  }, py::arg("onnx_path"), py::arg("checkpoint"),
     "Converts an ONNX model (exported by PyTorch or ember) into an ember checkpoint (as `ember import`), to serve or "
     "fine-tune with train(init=...).");
  module.def("_version", [] { return std::string(ember_version()); });
  module.def("info", &info, "What this machine gives ember: instruction sets, oneDNN's version, threads.");
}

}  // namespace ember::python
