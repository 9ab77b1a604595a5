// dnnl_util::PrimitiveArguments: a primitive runs with the arguments given, and a call
// oneDNN refuses becomes an ember::Error naming the primitive and oneDNN's status.
#include "layers/dnnl_util.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace ember {
namespace {

using dnnl::memory;

struct ReorderFixture {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  memory::desc plain{{2, 3, 4, 5}, memory::data_type::f32, memory::format_tag::nchw};
  memory::desc transposed{{2, 3, 4, 5}, memory::data_type::f32, memory::format_tag::nhwc};
  dnnl::reorder reorder{dnnl::reorder::primitive_desc(engine, plain, engine, transposed)};
};

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(PrimitiveArguments, RunsThePrimitiveOnTheGivenBuffers) {
  ReorderFixture f;
  std::vector<float> from(120), to(120, -1.0f);
  for (std::size_t i = 0; i < from.size(); ++i) from[i] = static_cast<float>(i);
  dnnl_util::PrimitiveArguments(f.engine, "test reorder")
      .add(DNNL_ARG_FROM, f.plain, from.data())
      .add(DNNL_ARG_TO, f.transposed, to.data())
      .execute(f.reorder, f.stream);
  f.stream.wait();
  // nchw (n, c, h, w) -> nhwc: element (n, c, h, w) lands at ((n * 4 + h) * 5 + w) * 3 + c.
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int h = 0; h < 4; ++h)
        for (int w = 0; w < 5; ++w) {
          ASSERT_EQ(to[static_cast<std::size_t>(((n * 4 + h) * 5 + w) * 3 + c)], from[static_cast<std::size_t>(((n * 3 + c) * 4 + h) * 5 + w)]);
        }
}

TEST(PrimitiveArguments, ARefusedExecutionNamesThePrimitiveAndTheStatus) {
  ReorderFixture f;
  std::vector<float> to(120);
  const std::string message = error_of([&] {
    dnnl_util::PrimitiveArguments(f.engine, "test reorder").add(DNNL_ARG_TO, f.transposed, to.data()).execute(f.reorder, f.stream);
  });
  EXPECT_NE(message.find("oneDNN test reorder"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid_arguments"), std::string::npos) << message;
}

TEST(PrimitiveArguments, MoreArgumentsThanItHoldsAreRefused) {
  ReorderFixture f;
  std::vector<float> buffer(120);
  dnnl_util::PrimitiveArguments arguments(f.engine, "test reorder");
  for (int i = 0; i < dnnl_util::PrimitiveArguments::capacity; ++i) arguments.add(DNNL_ARG_FROM, f.plain, buffer.data());
  const std::string message = error_of([&] { arguments.add(DNNL_ARG_FROM, f.plain, buffer.data()); });
  EXPECT_NE(message.find("more than 8 arguments"), std::string::npos) << message;
}

}  // namespace
}  // namespace ember
