#pragma once
// Writing a file so that readers see the old file or the whole new one, never a part:
// a temporary beside `path` (named `path`.tmp-<pid>-<thread id>-<counter>, so concurrent
// writers never share one), written, flushed and fsynced, then renamed over `path` (and
// the directory fsynced). On any failure the temporary is removed, whatever was at `path`
// before is untouched, and an ember::Error names the path and the reason.
#include <cstddef>
#include <span>
#include <string>

namespace ember {

// The file's bytes are the parts, one after the other.
void write_file_atomically(const std::string& path, std::span<const std::span<const std::byte>> parts);

}  // namespace ember
