// ember: train, evaluate and run convolutional and attention networks on CPUs.
// The CLI only parses flags, prints, and calls the library.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "engine/error.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command commands[] = {
    {"train", ember::cli::train_command, "train a model on an image dataset"},
    {"eval", ember::cli::eval_command, "evaluate a checkpoint on a dataset's test split"},
    {"predict", ember::cli::predict_command, "classify the images of an IDX file with a checkpoint"},
    {"plan", ember::cli::plan_command, "print the memory plan of a model's step"},
    {"bench", ember::cli::bench_command, "measure training or inference throughput"},
    {"export", ember::cli::export_command, "write a checkpoint's model as ONNX"},
    {"import", ember::cli::import_command, "convert an ONNX model into an ember checkpoint"},
    {"info", ember::cli::info_command, "print the instruction set, oneDNN version and threads"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: ember <command> [flags]\n\ncommands:\n");
  for (const Command& c : commands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'ember <command> --help' describes a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  for (const Command& c : commands) {
    if (name != c.name) continue;
    try {
      return c.run(argc, argv);
    } catch (const ember::cli::UsageError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    } catch (const ember::Error& e) {
      std::fprintf(stderr, "ember %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ember %s: error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "ember: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
