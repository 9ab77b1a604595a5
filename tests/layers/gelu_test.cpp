// GELU (exact and tanh): a double reference, finite differences, blocked layouts, options.
#include <oneapi/dnnl/dnnl.hpp>

#include "layers/gelu.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/error.h"
#include "layers/registry.h"
#include "support/layer_harness.h"
#include "support/expect_error.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

double gelu_reference(double x, GeluApproximation approximate) {
  if (approximate == GeluApproximation::tanh) {
    const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + std::tanh(u));
  }
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}

const char* name_of(GeluApproximation a) { return a == GeluApproximation::tanh ? "tanh" : "none"; }

class GeluTest : public ::testing::TestWithParam<GeluApproximation> {};

TEST_P(GeluTest, ForwardMatchesTheReference) {
  const Gelu layer(GetParam());
  for (const Shape& shape : {Shape{1, 1}, Shape{1, 7}, Shape{2, 5, 17}, Shape{3, 1, 33}, Shape{2, 3, 5, 7}}) {
    LayerHarness harness(layer, {HarnessInput{shape}});
    for (float& v : harness.inputs[0]) v *= 4.0f;  // [-4, 4]: both tails and the bend
    const std::vector<float> y = harness.forward();
    std::vector<double> reference;
    for (float v : harness.inputs[0]) reference.push_back(gelu_reference(v, GetParam()));
    testing::expect_close(y, reference, 1e-6, std::string("gelu ") + name_of(GetParam()) + " " + shape.str());
  }
}

TEST_P(GeluTest, GradientsMatchFiniteDifferences) {
  const Gelu layer(GetParam());
  for (const Shape& shape : {Shape{1, 7}, Shape{2, 5, 17}, Shape{3, 1, 33}}) {
    LayerHarness harness(layer, {HarnessInput{shape}});
    for (float& v : harness.inputs[0]) v *= 3.0f;
    testing::expect_gradients_match_finite_differences(harness);
  }
}

// Far right GELU is the identity with derivative 1, far left 0 with derivative 0:
// relative checks, so a layer that is wrong for large |x| cannot hide in a tolerance
// that grows with x.
TEST_P(GeluTest, TailsAreTheIdentityOnTheRightAndZeroOnTheLeft) {
  const Gelu layer(GetParam());
  const std::vector<float> x = {1e4f, 30.0f, 10.0f, -10.0f, -30.0f, -1e4f, 1e4f, 30.0f, 10.0f, -10.0f, -30.0f, -1e4f,
                                1e4f, -1e4f, 30.0f, -30.0f, 10.0f};  // 17: a vector body and a tail
  LayerHarness harness(layer, {HarnessInput{Shape{1, static_cast<std::int64_t>(x.size())}}});
  harness.inputs[0] = x;
  const std::vector<float> y = harness.forward();
  const std::vector<float> dx = harness.backward(std::vector<float>(x.size(), 1.0f)).inputs[0];
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::string what = std::string("gelu ") + name_of(GetParam()) + " at x = " + std::to_string(x[i]);
    if (x[i] > 0.0f) {
      EXPECT_LE(std::fabs(y[i] - x[i]), 1e-6 * x[i]) << what << ": " << y[i];
      EXPECT_LE(std::fabs(dx[i] - 1.0f), 1e-6) << what << ": gradient " << dx[i];
    } else {
      // GELU(-10) is about -1e-22 (exact) or -1e-37 (tanh); further left it underflows.
      EXPECT_LE(std::fabs(y[i]), 1e-20) << what << ": " << y[i];
      EXPECT_LE(std::fabs(dx[i]), 1e-20) << what << ": gradient " << dx[i];
    }
  }
}

TEST_P(GeluTest, WorksOnABlockedLayout) {
  const Gelu layer(GetParam());
  LayerHarness harness(layer, {HarnessInput{Shape{2, 17, 3, 3}, dnnl::memory::format_tag::nChw16c}});
  EXPECT_TRUE(harness.prepared().output.blocked != nullptr);
  const std::vector<float> y = harness.forward();
  std::vector<double> reference;
  for (float v : harness.inputs[0]) reference.push_back(gelu_reference(v, GetParam()));
  testing::expect_close(y, reference, 1e-6, "gelu on nChw16c");
  testing::expect_gradients_match_finite_differences(harness);
}

INSTANTIATE_TEST_SUITE_P(Approximations, GeluTest, ::testing::Values(GeluApproximation::none, GeluApproximation::tanh),
                         [](const ::testing::TestParamInfo<GeluApproximation>& info) { return std::string(name_of(info.param)); });

TEST(Gelu, InPlaceOnlyInInferenceBecauseBackwardReadsTheInput) {
  const Gelu layer;
  LayerHarness training(layer, {HarnessInput{Shape{2, 8}}}, Mode::training);
  EXPECT_FALSE(training.prepared().can_run_in_place);
  EXPECT_TRUE(training.prepared().backward_reads_inputs);
  EXPECT_FALSE(training.prepared().backward_reads_output);
  LayerHarness inference(layer, {HarnessInput{Shape{2, 8}}}, Mode::inference);
  EXPECT_TRUE(inference.prepared().can_run_in_place);
}

TEST(Gelu, TheTwoApproximationsDiffer) {
  const Gelu exact_layer(GeluApproximation::none);
  const Gelu tanh_layer(GeluApproximation::tanh);
  LayerHarness exact(exact_layer, {HarnessInput{Shape{1, 64}}});
  LayerHarness tanh(tanh_layer, {HarnessInput{Shape{1, 64}}});
  tanh.inputs = exact.inputs;
  EXPECT_NE(exact.forward(), tanh.forward());
}

TEST(Gelu, OptionsRoundTrip) {
  for (GeluApproximation a : {GeluApproximation::none, GeluApproximation::tanh}) {
    const Gelu layer(a);
    const auto rebuilt = make_layer("gelu", layer.options());
    EXPECT_EQ(rebuilt->kind(), "gelu");
    EXPECT_EQ(rebuilt->options(), layer.options());
  }
  EXPECT_EQ(make_layer("gelu", Json::object())->options(), (Json{{"approximate", "none"}}));
  EXPECT_EQ(Gelu(GeluApproximation::tanh).options(), (Json{{"approximate", "tanh"}}));
}

TEST(Gelu, BadOptionsAreNamed) {
  for (const Json& options : {Json{{"approximate", "fast"}}, Json{{"approximate", true}}}) {
    try {
      (void)make_layer("gelu", options);
      FAIL() << options.dump() << " was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("approximate"), std::string::npos) << message;
      EXPECT_NE(message.find("\"none\" or \"tanh\""), std::string::npos) << message;
      EXPECT_NE(message.find(options.at("approximate").dump()), std::string::npos) << message;
    }
  }
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("gelu", Json{{"approx", "tanh"}}); },
                                         {"gelu", "unknown option 'approx'", "approximate"}));
}

}  // namespace
}  // namespace ember
