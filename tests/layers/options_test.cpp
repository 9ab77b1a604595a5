// The option checks every layer shares (layers/options.h): one message shape, naming the
// layer kind, the option, the expected and the found value, from JSON and from C++.
#include "layers/options.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "engine/error.h"
#include "layers/conv2d.h"
#include "layers/linear.h"
#include "layers/pool2d.h"
#include "layers/registry.h"

namespace ember {
namespace {

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(LayerOptions, ChoiceAcceptsOnlyTheListedStrings) {
  const Json json{{"mode", "b"}};
  const LayerOptions o("thing", json, {"mode"});
  EXPECT_EQ(o.choice("mode", {"a", "b"}, "a"), "b");
  EXPECT_EQ(o.choice("other", {"a", "b"}, "a"), "a");
  EXPECT_EQ(error_of([&] { (void)o.choice("mode", {"x", "y", "z"}, "x"); }),
            "thing option 'mode': expected \"x\", \"y\" or \"z\", found \"b\"");
  EXPECT_EQ(error_of([&] { (void)o.choice("mode", {"x"}, "x"); }), "thing option 'mode': expected \"x\", found \"b\"");
  const Json number{{"mode", 1}};
  EXPECT_EQ(error_of([&] { (void)LayerOptions("thing", number, {"mode"}).choice("mode", {"a", "b"}, "a"); }),
            "thing option 'mode': expected \"a\" or \"b\", found 1");
}

TEST(LayerOptions, LayersWithoutOptionsRefuseAny) {
  EXPECT_EQ(error_of([] { LayerOptions::require_none("add", Json::object()); }), "(accepted)");
  EXPECT_EQ(error_of([] { (void)make_layer("add", Json{{"alpha", 2}}); }), "add: unknown option 'alpha' (it takes none)");
  EXPECT_EQ(error_of([] { (void)make_layer("relu", Json::array()); }), "relu: options must be a JSON object, found []");
}

TEST(LayerOptions, ConstructorsSayWhatTheJsonPathSays) {
  EXPECT_EQ(error_of([] { Linear(0, 4, true); }), "linear option 'in_features': expected a positive integer, found 0");
  EXPECT_EQ(error_of([] { Linear(4, -2, true); }), "linear option 'out_features': expected a positive integer, found -2");
  Conv2dOptions conv;
  conv.in_channels = 3;
  conv.out_channels = 8;
  conv.kernel = {3, 3};
  EXPECT_EQ(error_of([&] { Conv2d{conv}; }), "(accepted)");
  conv.stride = {1, 0};
  EXPECT_EQ(error_of([&] { Conv2d{conv}; }), "conv2d option 'stride': expected positive integers, found [1,0]");
  conv.stride = {1, 1};
  conv.padding = {-1, -1};
  EXPECT_EQ(error_of([&] { Conv2d{conv}; }), "conv2d option 'padding': expected non-negative integers, found -1");
  Pool2dOptions pool;
  pool.kernel = {3, 3};
  pool.padding = {1, 2};
  EXPECT_EQ(error_of([&] { Pool2d{pool}; }),
            "max_pool2d option 'padding': expected at most half the kernel 3 in each axis, found [1,2]");
  EXPECT_EQ(error_of([] { (void)make_layer("avg_pool2d", Json{{"kernel", 2}, {"padding", 2}}); }),
            "avg_pool2d option 'padding': expected at most half the kernel 2 in each axis, found 2");
}

}  // namespace
}  // namespace ember
