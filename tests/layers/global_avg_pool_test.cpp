#include "layers/global_avg_pool.h"

#include <gtest/gtest.h>

#include <optional>
#include <ostream>

#include <oneapi/dnnl/dnnl.hpp>

#include "layers/registry.h"
#include "support/expect_error.h"
#include "support/layer_harness.h"

namespace ember {
namespace {

using testing::HarnessInput;
using testing::LayerHarness;

struct GlobalPoolCase {
  const char* name;
  Shape input;
  std::optional<dnnl::memory::format_tag> layout;
};

void PrintTo(const GlobalPoolCase& c, std::ostream* os) { *os << c.name; }

class GlobalAvgPoolTest : public ::testing::TestWithParam<GlobalPoolCase> {};

TEST_P(GlobalAvgPoolTest, ForwardIsEachChannelsMean) {
  const GlobalPoolCase& c = GetParam();
  const GlobalAvgPool layer;
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  EXPECT_EQ(harness.output_shape(), (Shape{c.input[0], c.input[1]}));
  EXPECT_EQ(harness.prepared().output.blocked, nullptr) << "the output is plain";
  const std::vector<float> y = harness.forward();
  const std::int64_t S = c.input[2] * c.input[3];
  std::vector<double> reference(static_cast<std::size_t>(c.input[0] * c.input[1]));
  for (std::size_t k = 0; k < reference.size(); ++k) {
    double sum = 0.0;
    for (std::int64_t i = 0; i < S; ++i) sum += harness.inputs[0][k * static_cast<std::size_t>(S) + static_cast<std::size_t>(i)];
    reference[k] = sum / static_cast<double>(S);
  }
  testing::expect_close(y, reference, 1e-6, "global average");
}

TEST_P(GlobalAvgPoolTest, GradientsMatchFiniteDifferences) {
  const GlobalPoolCase& c = GetParam();
  const GlobalAvgPool layer;
  LayerHarness harness(layer, {HarnessInput{c.input, c.layout}});
  testing::expect_gradients_match_finite_differences(harness);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GlobalAvgPoolTest,
                         ::testing::Values(GlobalPoolCase{"plain", Shape{2, 3, 5, 4}, std::nullopt},
                                           GlobalPoolCase{"one_pixel", Shape{3, 4, 1, 1}, std::nullopt},
                                           GlobalPoolCase{"nchw16c_17_channels", Shape{2, 17, 3, 3}, dnnl::memory::format_tag::nChw16c},
                                           GlobalPoolCase{"nchw8c", Shape{2, 8, 7, 7}, dnnl::memory::format_tag::nChw8c},
                                           GlobalPoolCase{"nhwc", Shape{2, 5, 3, 2}, dnnl::memory::format_tag::nhwc}),
                         [](const ::testing::TestParamInfo<GlobalPoolCase>& info) { return std::string(info.param.name); });

TEST(GlobalAvgPool, BadInputsAndOptionsAreClearErrors) {
  const GlobalAvgPool layer;
  EXPECT_TRUE(testing::throws_error_with([&] { (void)layer.output_shape(std::vector<Shape>{Shape{2, 3, 4}}); },
                                         {"global_avg_pool", "(N, C, H, W)", "found (2, 3, 4)"}));
  EXPECT_TRUE(testing::throws_error_with([] { (void)make_layer("global_avg_pool", Json{{"kernel", 2}}); },
                                         {"global_avg_pool", "unknown option 'kernel'"}));
  EXPECT_EQ(make_layer("global_avg_pool", Json::object())->kind(), "global_avg_pool");
}

}  // namespace
}  // namespace ember
