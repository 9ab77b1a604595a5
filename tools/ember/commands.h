#pragma once
// One function per `ember` subcommand. Each parses its own flags and returns the exit
// code: 0 success, 1 failure (ember::Error), 2 usage error (cli::UsageError).
namespace ember::cli {

int train_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int predict_command(int argc, char** argv);
int info_command(int argc, char** argv);
int plan_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int export_command(int argc, char** argv);
int import_command(int argc, char** argv);

}  // namespace ember::cli
