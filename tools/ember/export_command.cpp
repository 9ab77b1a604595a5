#include <cstdio>
#include <string>

#include "engine/onnx_export.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

int export_command(int argc, char** argv) {
  Flags flags("export",
              "Write a checkpoint's model as ONNX (opset 13 to 17), for ONNX Runtime and other ONNX consumers. The "
              "input normalization is not folded in: the ONNX model takes the normalized input, as ember's session "
              "does; the checkpoint's mean and std are stored as metadata (ember.input_mean, ember.input_std).");
  flags.value("checkpoint", "checkpoint written by ember train --save", std::nullopt, "PATH")
      .value("onnx", "ONNX file to write (atomically)", std::nullopt, "PATH")
      .value("opset", "ONNX opset, 13 to 17 (LayerNormalization is decomposed below 17)", std::to_string(onnx_default_opset), "N");
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  const std::int64_t opset = flags.positive_integer("opset");
  if (opset < onnx_min_opset || opset > onnx_max_opset) {
    throw UsageError("ember export: --opset: expected " + std::to_string(onnx_min_opset) + " to " +
                     std::to_string(onnx_max_opset) + ", found " + std::to_string(opset));
  }
  export_checkpoint_onnx(flags.text("checkpoint"), flags.text("onnx"), static_cast<int>(opset));
  std::printf("wrote %s (opset %lld)\n", flags.text("onnx").c_str(), static_cast<long long>(opset));
  return 0;
}

}  // namespace ember::cli
