#pragma once
// The one exception type the library throws. Messages name the thing (file, field,
// layer), the expected and the found value; only the CLI turns them into exit codes.
#include <stdexcept>
#include <string>

namespace ember {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace ember
