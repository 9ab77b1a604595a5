#pragma once
// This process's resident memory as Linux reports it (/proc/self/status), for the tests
// and benchmarks that hold the engine to its memory estimate (engine/step_memory.h).
// Linux only; each function throws ember::Error when /proc cannot be read or written.
#include <cstddef>

namespace ember {

// VmRSS: bytes resident now.
std::size_t resident_bytes();
// VmHWM: the largest resident size since the process started or reset_peak_resident().
std::size_t peak_resident_bytes();
// Sets VmHWM to the current VmRSS (writes 5 to /proc/self/clear_refs, Linux >= 4.0).
void reset_peak_resident();

}  // namespace ember
