// Built instead of engine/onnx_*.cpp when ONNX is not found at configure time (EMBER_ONNX):
// the entry points exist and say why they cannot work.
#include "engine/error.h"
#include "engine/onnx_export.h"
#include "engine/onnx_import.h"

namespace ember {
namespace {

[[noreturn]] void unavailable(const std::string& what) {
  throw Error(what + ": this ember was built without ONNX support (configure with EMBER_ONNX=ON and "
              "Debian's libonnx-dev and libprotobuf-dev installed)");
}

}  // namespace

bool onnx_available() { return false; }

std::string onnx_model_bytes(const Graph&, const ParameterStore&, const OnnxExportOptions&) { unavailable("ONNX export"); }
void export_onnx(const Graph&, const ParameterStore&, const std::string& path, const OnnxExportOptions&) { unavailable(path); }
void export_checkpoint_onnx(const std::string&, const std::string& onnx_path, int) { unavailable(onnx_path); }

TrainedModel import_onnx(const std::string& path, std::size_t) { unavailable(path); }
TrainedModel import_onnx_bytes(std::string_view, const std::string& source, std::size_t) { unavailable(source); }
void import_onnx_to_checkpoint(const std::string& onnx_path, const std::string&) { unavailable(onnx_path); }

}  // namespace ember
