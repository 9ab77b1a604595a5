#pragma once
// Parsing JSON that came from a file. nlohmann::json throws several exception types (a
// syntax error, and also out_of_range for a number beyond a double such as 1e309); every
// one of them becomes an ember::Error naming where the text came from, so a caller that
// catches ember::Error is never surprised by a file.
#include <string_view>

#include <nlohmann/json.hpp>

namespace ember {

// `where` names the source for the message: "model.json", "x.safetensors: the header".
nlohmann::json parse_json(std::string_view text, std::string_view where);

}  // namespace ember
