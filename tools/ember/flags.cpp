#include "tools/ember/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "engine/cpu_count.h"
#include "engine/error.h"
#include "engine/memory_limit.h"
#include "engine/model_spec.h"
#include "engine/text.h"
#include "engine/threading.h"

namespace ember::cli {

Flags::Flags(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {
  toggle("help", "print this help and exit");
}

Flags& Flags::value(const std::string& name, const std::string& help, std::optional<std::string> default_value,
                    const std::string& value_name) {
  order_.push_back(name);
  specs_[name] = Spec{help, std::move(default_value), value_name, false};
  return *this;
}

Flags& Flags::toggle(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{help, std::nullopt, "", true};
  return *this;
}

bool Flags::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      throw UsageError("ember " + command_ + ": unexpected argument '" + arg + "' (flags start with --; see --help)");
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) {
      throw UsageError("ember " + command_ + ": unknown flag --" + name + " (see ember " + command_ + " --help)");
    }
    if (it->second.is_toggle) {
      if (inline_value) throw UsageError("ember " + command_ + ": --" + name + " takes no value");
      values_[name] = "1";
      continue;
    }
    if (inline_value) {
      values_[name] = *inline_value;
    } else {
      if (i + 1 >= argc) throw UsageError("ember " + command_ + ": --" + name + " needs a value (" + it->second.value_name + ")");
      values_[name] = argv[++i];
    }
  }
  return !on("help");
}

std::string Flags::help() const {
  std::string out = "usage: ember " + command_ + " [flags]\n\n" + summary_ + "\n\nflags:\n";
  for (const std::string& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = "  --" + name + (s.is_toggle ? "" : " " + s.value_name);
    if (left.size() < 30) left.resize(30, ' ');
    else left += "  ";
    out += left + s.help;
    if (s.default_value) out += " (default: " + (s.default_value->empty() ? std::string("none") : *s.default_value) + ")";
    out += "\n";
  }
  return out;
}

const Flags::Spec& Flags::spec(const std::string& name) const { return specs_.at(name); }

bool Flags::has(const std::string& name) const {
  return values_.count(name) > 0 || (spec(name).default_value.has_value() && !spec(name).default_value->empty());
}

bool Flags::on(const std::string& name) const { return values_.count(name) > 0; }

std::string Flags::text(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  if (spec(name).default_value) return *spec(name).default_value;
  throw UsageError("ember " + command_ + ": --" + name + " is required (" + spec(name).help + ")");
}

void Flags::fail(const std::string& name, const std::string& expected, const std::string& found) const {
  throw UsageError("ember " + command_ + ": --" + name + ": expected " + expected + ", found '" + found + "'");
}

std::int64_t Flags::non_negative_integer(const std::string& name) const {
  const std::string t = text(name);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || *end != '\0' || errno != 0 || v < 0) fail(name, "a non-negative integer", t);
  return v;
}

std::int64_t Flags::positive_integer(const std::string& name) const {
  const std::string t = text(name);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || *end != '\0' || errno != 0 || v <= 0) fail(name, "a positive integer", t);
  return v;
}

std::int64_t Flags::positive_integer_or_auto(const std::string& name) const {
  const std::string t = text(name);
  if (t == "auto") return 0;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(t.c_str(), &end, 10);
  if (t.empty() || *end != '\0' || errno != 0 || v <= 0) fail(name, "a positive integer or auto", t);
  return v;
}

double Flags::positive_number(const std::string& name) const {
  const std::string t = text(name);
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || *end != '\0' || !std::isfinite(v) || v <= 0) fail(name, "a positive number", t);
  return v;
}

double Flags::number_in(const std::string& name, double low, double high, bool high_inclusive) const {
  const std::string t = text(name);
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  const bool ok = !t.empty() && *end == '\0' && std::isfinite(v) && v >= low && (high_inclusive ? v <= high : v < high);
  if (!ok) {
    fail(name, "a number in [" + format_number(low) + ", " + format_number(high) + (high_inclusive ? "]" : ")"), t);
  }
  return v;
}

std::string Flags::choice(const std::string& name, const std::vector<std::string>& choices) const {
  const std::string t = text(name);
  for (const auto& c : choices) {
    if (c == t) return t;
  }
  fail(name, "one of " + join(choices, "|"), t);
}

std::size_t Flags::memory_size(const std::string& name) const {
  const std::string t = text(name);
  try {
    return parse_memory_size(t, "--" + name);
  } catch (const Error&) {
    fail(name, "a size such as 512M, 4G or 1.5G (0: the available memory)", t);
  }
}

Flags& Flags::memory_limit() {
  return value("memory-limit",
               "refuse a model whose memory (weights, optimizer state, arenas) exceeds this, e.g. 4G (0: the available memory)",
               "0", "SIZE");
}

Flags& Flags::threads(const std::string& help) {
  return value("threads", help + "; default: the cores available to this process (OMP_NUM_THREADS if set)",
               std::to_string(available_compute_threads()), "N");
}

int Flags::thread_count() const {
  const std::int64_t threads = positive_integer("threads");
  if (threads > max_compute_threads) fail("threads", "1 to " + std::to_string(max_compute_threads), text("threads"));
  return static_cast<int>(threads);
}

Flags& Flags::model(const std::string& default_value) {
  return value("model", "built-in model (" + join(builtin_model_names(), ", ") + ") or path to a JSON model spec",
               default_value, "M");
}

}  // namespace ember::cli
