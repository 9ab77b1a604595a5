// Writes, for the ONNX Runtime comparison (tests/onnx/onnxruntime_parity.py), every test
// model (onnx_test_models.h) exported at opsets 13 and 17, a fixed input batch and ember
// session's output for it:
//   <dir>/<model>.opset<N>.onnx, <dir>/<model>.input.f32, <dir>/<model>.output.f32 (raw
//   little-endian floats) and <dir>/cases.json listing them with their shapes.
// Usage: ember_write_onnx_cases DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/onnx_export.h"
#include "engine/session.h"
#include "onnx/onnx_test_models.h"

namespace {

void write_floats(const std::string& path, const std::vector<float>& values) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!file) throw ember::Error(path + ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::string dir = argv[1];
    std::filesystem::create_directories(dir);
    const std::int64_t batch = 5;
    ember::Json cases = ember::Json::array();
    for (ember::testing::TestModel& m : ember::testing::all_test_models()) {
      ember::Json files = ember::Json::array();
      for (int opset : {13, 17}) {
        ember::OnnxExportOptions options;
        options.opset = opset;
        const std::string name = m.name + ".opset" + std::to_string(opset) + ".onnx";
        ember::export_onnx(*m.graph, *m.parameters, dir + "/" + name, options);
        files.push_back(name);
      }
      const std::vector<float> input = ember::testing::test_input(*m.graph, batch);
      const ember::Shape input_shape = m.graph->input_sample_shape().prepend(batch);
      const ember::Shape output_shape = m.graph->value_shape(m.graph->output()).with_batch(batch);
      ember::SessionOptions options;
      options.max_batch = batch;
      ember::InferenceSession session(std::move(m.graph), std::move(m.parameters), options);
      std::vector<float> output(static_cast<std::size_t>(output_shape.elements()));
      session.run(input.data(), batch, output.data());
      write_floats(dir + "/" + m.name + ".input.f32", input);
      write_floats(dir + "/" + m.name + ".output.f32", output);
      cases.push_back({{"model", m.name},
                       {"onnx", files},
                       {"input", m.name + ".input.f32"},
                       {"output", m.name + ".output.f32"},
                       {"input_shape", std::vector<std::int64_t>(input_shape.dims().begin(), input_shape.dims().end())},
                       {"output_shape", std::vector<std::int64_t>(output_shape.dims().begin(), output_shape.dims().end())}});
    }
    std::ofstream(dir + "/cases.json") << cases.dump(2) << "\n";
    std::printf("wrote %zu models to %s\n", cases.size(), dir.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ember_write_onnx_cases: %s\n", e.what());
    return 1;
  }
}
