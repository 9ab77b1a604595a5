#pragma once
// Bad-input tests check the message, not only that something was thrown: the library's
// errors name the thing (layer, option, tensor), the expected and the found value.
//
//   EXPECT_TRUE(testing::throws_error_with([&] { ... }, {"conv2d", "in_channels 3", "found 2"}));
#include <gtest/gtest.h>

#include <exception>
#include <initializer_list>
#include <string>
#include <string_view>
#include <typeinfo>

#include "engine/error.h"

namespace ember::testing {

// Success when `action` throws ember::Error whose message contains every one of `parts`;
// otherwise a failure that shows the message (or that nothing, or another type, was thrown).
template <class Action>
::testing::AssertionResult throws_error_with(Action&& action, std::initializer_list<std::string_view> parts) {
  std::string message;
  try {
    action();
    return ::testing::AssertionFailure() << "nothing was thrown";
  } catch (const Error& e) {
    message = e.what();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw " << typeid(e).name() << ", not ember::Error: " << e.what();
  }
  for (std::string_view part : parts) {
    if (message.find(part) == std::string::npos) {
      return ::testing::AssertionFailure() << "the message \"" << message << "\" does not contain \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess() << message;
}

}  // namespace ember::testing
