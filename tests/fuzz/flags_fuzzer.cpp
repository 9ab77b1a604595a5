// The CLI's flag parser (tools/ember/flags.h) on arbitrary command lines: the input, split
// at newlines, is argv after the command name; the flags are `ember train`'s kinds (values
// with and without defaults, toggles). Every typed accessor is then asked for every flag.
// A UsageError is the expected outcome of a bad line.
#include <cstdint>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.h"
#include "tools/ember/flags.h"

namespace {

ember::cli::Flags declared_flags() {
  ember::cli::Flags flags("fuzz", "flags of every kind");
  flags.value("model", "model", "seed-cnn", "M")
      .value("data", "data", "", "D")
      .value("epochs", "epochs", "3", "N")
      .value("lr", "learning rate", "1e-3", "LR")
      .value("momentum", "momentum", "0.9", "M")
      .value("optimizer", "optimizer", "adam", "NAME")
      .value("seed", "seed", "0", "S")
      .value("required", "no default")
      .toggle("nesterov", "toggle")
      .toggle("json", "toggle");
  return flags;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> arguments{"ember", "fuzz"};
  std::string current;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == '\n') {
      arguments.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));  // NUL bytes end the argument early, as in a real argv
    }
  }
  if (!current.empty()) arguments.push_back(current);
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  ember::cli::Flags flags = declared_flags();
  bool parsed = false;
  ember::fuzz::expect_only_ember_errors<ember::cli::UsageError>([&] {
    flags.parse(static_cast<int>(arguments.size()), argv.data(), 2);
    parsed = true;
  });
  if (!parsed) return 0;
  ember::fuzz::touch(flags.help().data(), flags.help().size());
  for (const char* name : {"model", "data", "epochs", "lr", "momentum", "optimizer", "seed", "required", "nesterov", "json"}) {
    const auto expect = [&](auto&& call) { ember::fuzz::expect_only_ember_errors<ember::cli::UsageError>(call); };
    expect([&] { (void)flags.has(name); });
    expect([&] { (void)flags.on(name); });
    expect([&] { (void)flags.text(name); });
    expect([&] { (void)flags.positive_integer(name); });
    expect([&] { (void)flags.non_negative_integer(name); });
    expect([&] { (void)flags.positive_number(name); });
    expect([&] { (void)flags.number_in(name, 0.0, 1.0, false); });
    expect([&] { (void)flags.choice(name, {"sgd", "adam", "adamw"}); });
  }
  return 0;
}
