#include "engine/text.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ember {
namespace {

TEST(FormatNumber, FloatIsShortestRoundTripOfTheFloat) {
  EXPECT_EQ(format_number(0.1f), "0.1");
  EXPECT_EQ(format_number(-2.5f), "-2.5");
  EXPECT_EQ(format_number(1e-8f), "1e-08");
  EXPECT_EQ(format_number(3.0f), "3");
  EXPECT_EQ(format_number(std::numeric_limits<float>::infinity()), "inf");
  EXPECT_EQ(format_number(std::numeric_limits<float>::quiet_NaN()), "nan");
}

TEST(FormatNumber, DoubleIsShortestRoundTripOfTheDouble) {
  EXPECT_EQ(format_number(0.1), "0.1");
  // The float 0.1f widened: the overloads are not interchangeable.
  EXPECT_EQ(format_number(static_cast<double>(0.1f)), "0.10000000149011612");
  EXPECT_EQ(format_number(-0.0), "-0");
}

TEST(Join, SeparatesItemsInOrder) {
  EXPECT_EQ(join(std::vector<std::string>{"a", "b", "c"}), "a, b, c");
  EXPECT_EQ(join(std::vector<std::string>{"only"}), "only");
  EXPECT_EQ(join(std::vector<std::string>{}), "");
  EXPECT_EQ(join(std::vector<std::string_view>{"x", "y"}, "|"), "x|y");
  EXPECT_EQ(join(std::initializer_list<const char*>{"p", "q"}, " + "), "p + q");
}

TEST(Join, WritesIntegersInDecimal) {
  EXPECT_EQ(join(std::vector<std::int64_t>{16, -1, 28}), "16, -1, 28");
  EXPECT_EQ(join(std::vector<std::uint32_t>{4294967295u}), "4294967295");
}

}  // namespace
}  // namespace ember
