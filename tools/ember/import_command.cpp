#include <cstdio>
#include <string>

#include "engine/onnx_import.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

int import_command(int argc, char** argv) {
  Flags flags("import",
              "Convert an ONNX model (exported by PyTorch or by ember export) into an ember checkpoint. Every ONNX "
              "node must map to an ember layer; an unsupported one is an error naming it. (ember eval, predict and "
              "the C API also read .onnx files directly.)");
  flags.value("onnx", "ONNX file to read", std::nullopt, "PATH").value("save", "checkpoint to write", std::nullopt, "PATH");
  // `ember import model.onnx --save x`: the file may come first, without --onnx.
  int first = 2;
  std::string positional;
  if (argc > 2 && argv[2][0] != '-') {
    positional = argv[2];
    first = 3;
  }
  if (!flags.parse(argc, argv, first)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  if (!positional.empty() && flags.has("onnx")) throw UsageError("ember import: the ONNX file is given twice (" + positional + " and --onnx)");
  const std::string onnx = positional.empty() ? flags.text("onnx") : positional;
  import_onnx_to_checkpoint(onnx, flags.text("save"));
  std::printf("wrote %s\n", flags.text("save").c_str());
  return 0;
}

}  // namespace ember::cli
