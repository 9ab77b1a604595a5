#pragma once
// `ember bench --session`: many callers share one InferenceSession, as in a server.
#include "tools/ember/flags.h"

namespace ember::cli {

// Reads --model or --checkpoint, --batch-size, --mixed-batches, --micro-batch, --callers,
// --calls, --warmup and --json from `flags`; prints calls/s, images/s, the latency
// percentiles and resident memory before and after the timed calls.
int bench_session(const Flags& flags);

}  // namespace ember::cli
