#pragma once
// Command-line flags for one `ember` subcommand: declared with a help line and an
// optional default, parsed from `--name value` or `--name=value`, read back typed.
// Every problem is a UsageError whose message names the flag, expected and found.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ember::cli {

class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& message) : std::runtime_error(message) {}
};

class Flags {
 public:
  Flags(std::string command, std::string summary);

  // A flag taking a value; no default means it is required unless the command checks has().
  Flags& value(const std::string& name, const std::string& help, std::optional<std::string> default_value = std::nullopt,
               const std::string& value_name = "VALUE");
  // A flag without a value (--help, --json).
  Flags& toggle(const std::string& name, const std::string& help);

  // Throws UsageError. Returns false if --help was given (help() was printed by the caller).
  bool parse(int argc, char** argv, int first);
  std::string help() const;

  bool has(const std::string& name) const;
  bool on(const std::string& name) const;
  std::string text(const std::string& name) const;
  std::int64_t positive_integer(const std::string& name) const;
  std::int64_t non_negative_integer(const std::string& name) const;
  // A positive integer, or 0 for "auto".
  std::int64_t positive_integer_or_auto(const std::string& name) const;
  double positive_number(const std::string& name) const;
  double number_in(const std::string& name, double low, double high, bool high_inclusive) const;
  std::string choice(const std::string& name, const std::vector<std::string>& choices) const;
  // A size such as 512M or 4G (engine/memory_limit.h), in bytes; 0 stays 0 (the default).
  std::size_t memory_size(const std::string& name) const;
  // Declares --memory-limit, which every command that loads or builds a model takes.
  Flags& memory_limit();
  // Declares --threads, by default the cores available to the process (engine/cpu_count.h).
  Flags& threads(const std::string& help);
  // --threads, checked against max_compute_threads (engine/threading.h).
  int thread_count() const;
  // Declares --model, its help naming every built-in model (engine/model_spec.h's registry).
  Flags& model(const std::string& default_value = "seed-cnn");

 private:
  struct Spec {
    std::string help;
    std::optional<std::string> default_value;
    std::string value_name;
    bool is_toggle = false;
  };
  const Spec& spec(const std::string& name) const;
  [[noreturn]] void fail(const std::string& name, const std::string& expected, const std::string& found) const;

  std::string command_;
  std::string summary_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::string> values_;
};

}  // namespace ember::cli
