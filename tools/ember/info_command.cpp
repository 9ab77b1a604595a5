#include <omp.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "engine/text.h"
#include "simd/dispatch.h"
#include "tools/ember/commands.h"
#include "tools/ember/flags.h"

namespace ember::cli {

int info_command(int argc, char** argv) {
  Flags flags("info", "Print what this machine gives ember: the instruction set its kernels use, oneDNN's version and the threads available.");
  if (!flags.parse(argc, argv, 2)) {
    std::printf("%s", flags.help().c_str());
    return 0;
  }
  std::vector<std::string_view> available_names;
  for (simd::Isa isa : simd::available_isas()) available_names.push_back(simd::isa_name(isa));
  const std::string available = join(available_names);
  const dnnl_version_t* dnnl = dnnl_version();
  std::printf("instruction set : %s (available: %s; EMBER_ISA overrides)\n",
              std::string(simd::isa_name(simd::selected_isa())).c_str(), available.c_str());
  std::printf("oneDNN          : %d.%d.%d (%s)\n", dnnl->major, dnnl->minor, dnnl->patch, dnnl->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");
  std::printf("threads         : %d available (train/eval/bench use --threads N, default 1)\n", omp_get_num_procs());
  return 0;
}

}  // namespace ember::cli
