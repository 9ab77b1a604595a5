#include "engine/json_text.h"

#include <string>

#include "engine/error.h"

namespace ember {

nlohmann::json parse_json(std::string_view text, std::string_view where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string(where) + " is not valid JSON: " + e.what());
  }
}

}  // namespace ember
