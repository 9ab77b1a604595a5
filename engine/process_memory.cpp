#include "engine/process_memory.h"

#include <fstream>
#include <string>

#include "engine/error.h"

namespace ember {
namespace {

// A "Name:   1234 kB" line of /proc/self/status, in bytes.
std::size_t status_field(const std::string& name) {
  std::ifstream status("/proc/self/status");
  if (!status) throw Error("/proc/self/status: cannot open");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(name + ":", 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(name.size() + 1))) * 1024;
  }
  throw Error("/proc/self/status: no " + name + " line");
}

}  // namespace

std::size_t resident_bytes() { return status_field("VmRSS"); }

std::size_t peak_resident_bytes() { return status_field("VmHWM"); }

void reset_peak_resident() {
  std::ofstream clear_refs("/proc/self/clear_refs");
  clear_refs << "5";
  clear_refs.flush();
  if (!clear_refs) throw Error("/proc/self/clear_refs: cannot write 5 (resetting the peak needs Linux >= 4.0)");
}

}  // namespace ember
