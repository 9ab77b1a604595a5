// Checkpoints (engine/training_state.h) on arbitrary bytes: load_trained_model, then, on
// a store and optimizer built from the model it returned, load_training_state.
#include <cstdint>

#include "engine/model_spec.h"
#include "engine/optimizer.h"
#include "engine/parameters.h"
#include "engine/training_state.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = ember::fuzz::write_input("checkpoint.safetensors", data, size);
  ember::fuzz::expect_only_ember_errors([&] {
    const ember::TrainedModel model = ember::load_trained_model(path);
    ember::ParameterStore parameters(*model.graph);
    for (const char* name : {"adam", "sgd"}) {
      ember::fuzz::expect_only_ember_errors([&] {
        ember::OptimizerOptions options;
        options.momentum = 0.9f;
        const auto optimizer = ember::make_optimizer(name, options, parameters);
        const ember::TrainingState state = ember::load_training_state(path, parameters, *optimizer);
        if (state.epoch < 0 || state.step < 0) ember::fuzz::finding("load_training_state returned a negative epoch or step");
      });
    }
  });
  return 0;
}
