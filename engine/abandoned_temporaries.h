#pragma once
// Temporaries that write_safetensors left beside a file when its process died mid-save
// (SIGKILL, power loss): `<path>.tmp-<pid>-<tid>-<n>`. Nothing reads them, but each is as
// large as the file, so a run that crashes repeatedly would fill the disk with them.
#include <cstdint>
#include <string>

namespace ember {

// Removes the temporaries of `path` whose writer is no longer running (no process has
// its pid). Temporaries carrying this process's own pid count as abandoned too (a
// restarted container reuses its pids): call this only when no thread of this process
// is writing `path`. Live writers' temporaries on this machine are left alone. Returns
// how many were removed; one that cannot be removed is left, for the save to report
// the directory's problem with its own message.
std::int64_t remove_abandoned_temporaries(const std::string& path);

}  // namespace ember
