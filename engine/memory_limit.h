#pragma once
// The most memory a model may claim. ember knows a step's whole memory before it runs
// (engine/step_memory.h), so loading a spec or a checkpoint, creating a session, training
// and planning compare that figure with a limit first and refuse, with the figure and the
// limit in the message, before anything of that size is allocated. A file that asks for
// 1e11 features is an error, not an allocation.
#include <cstddef>
#include <string>
#include <string_view>

namespace ember {

// What a limit of 0 means everywhere (options, flags, the C API): the machine's available
// memory, read when the limit is resolved.
inline constexpr std::size_t default_memory_limit = 0;

// Linux's MemAvailable, or the cgroup's remaining allowance (v2 memory.max minus
// memory.current) when that is smaller. Throws ember::Error if neither can be read.
std::size_t available_memory_bytes();

// `requested` unless it is default_memory_limit, then available_memory_bytes().
std::size_t resolve_memory_limit(std::size_t requested);

// Throws ember::Error "<what> needs <needed> (<breakdown>); the memory limit is <limit> ..."
// when needed > limit (limit as resolved; `breakdown` may be empty).
void check_memory_limit(std::size_t needed, std::size_t limit, std::string_view what, std::string_view breakdown = {});

// "123", "512K", "64M", "1.5G", "2T" (powers of 1024; a trailing "B"/"iB" is accepted) in
// bytes; "0" is default_memory_limit. Throws ember::Error naming `field` on anything else.
std::size_t parse_memory_size(std::string_view text, std::string_view field);

// "1.50 GiB", "12.0 MiB", "512 bytes".
std::string format_bytes(std::size_t bytes);

}  // namespace ember
