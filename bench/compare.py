#!/usr/bin/python3
"""ember vs PyTorch on the same workloads, interleaved; run it through bench/compare.sh.

Workloads: every built-in model, training step and inference, batch 1, 64 and 256, 1 and 2
threads. Each round runs every workload once in ember (`ember bench --json`, a fresh
process) and then in PyTorch (bench/pytorch_models.py, one long-lived process per thread
count, so torch's start-up is paid once); the figure is the median over the rounds, so
a noisy neighbour hurts both sides alike. Both sides run the same number of steps on the
same kind of data (real Fashion-MNIST batches; the attention-retrieval task for
attention-mse), sized in a calibration pass so one measurement takes about --seconds;
a measurement's figure is img/s at its median step time, taken the same way on both sides.
Then the GEMM table: ember_bench's gemm suite (ember vs oneDNN vs OpenBLAS), medians.

Several PyTorch peers at once: --torch-python PY once per peer (e.g. Debian's 1.13 and
PyPI's newest in a venv); each round then runs ember and every peer in turn, and every
peer has its columns in the tables and its bars in the chart, named by its torch version.

Writes <out>/comparison.md (tables), <out>/comparison.svg (ember/PyTorch ratio per
workload and peer) and <out>/comparison.json (every sample). Standard library only.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from xml.sax.saxutils import escape

from worker_process import close_worker  # the script's folder is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
# Debian may select OpenBLAS's pthread build as libblas.so.3; its OpenMP build is faster
# with torch's OpenMP threads, so the worker loads it first.
OPENBLAS_OPENMP = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
TORCH_PYTHON = "/usr/bin/python3"  # Debian's python3-torch; --torch-python for another (a venv's newest)
MODELS = ["seed-cnn", "lenet", "attn-cnn", "attention-mse", "resnet"]
MODES = ["training", "inference"]
BATCHES = [1, 64, 256]
THREADS = [1, 2]


def fail(message):
    print("compare: " + message, file=sys.stderr)
    sys.exit(1)


def parse_args():
    parser = argparse.ArgumentParser(description="ember vs PyTorch, interleaved; tables and a chart.")
    parser.add_argument("--build", default=os.environ.get("EMBER_BUILD", os.path.join(ROOT, "build", "release")),
                        help="directory with the ember and ember_bench binaries (default: build/release, or $EMBER_BUILD)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="directory for the outputs")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the figure is the median (default 5)")
    parser.add_argument("--seconds", type=float, default=0.6, help="target length of one measurement (default 0.6)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of ~0.1 s, a short GEMM pass")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--no-gemm", action="store_true", help="skip the GEMM table")
    parser.add_argument("--torch-python", action="append",
                        help="a python whose torch is a peer; repeat for several peers, interleaved "
                             "(default: Debian's, " + TORCH_PYTHON + ")")
    parser.add_argument("--batches", default=",".join(str(b) for b in BATCHES),
                        help="comma-separated batch sizes (default: " + ",".join(str(b) for b in BATCHES) + ")")
    args = parser.parse_args()
    args.torch_python = args.torch_python or [TORCH_PYTHON]
    if args.quick:
        args.rounds, args.seconds = 2, 0.1
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error("unknown model(s) " + ", ".join(unknown) + "; known: " + ", ".join(MODELS))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        parser.error("--batches: expected comma-separated positive integers, found " + args.batches)
    if not args.batches or min(args.batches) < 1:
        parser.error("--batches: expected comma-separated positive integers, found " + ",".join(map(str, args.batches)))
    return args


class TorchWorker:
    """bench/pytorch_models.py --serve at one thread count."""

    def __init__(self, threads, python):
        env = dict(os.environ, LD_PRELOAD=JEMALLOC, OMP_NUM_THREADS=str(threads))
        if os.path.isdir(OPENBLAS_OPENMP):
            env["LD_LIBRARY_PATH"] = OPENBLAS_OPENMP + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        self.process = subprocess.Popen([python, os.path.join(ROOT, "bench", "pytorch_models.py"), "--threads",
                                         str(threads), "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                        text=True)
        line = self.process.stdout.readline()
        if not line:
            fail(f"the PyTorch worker ({python} bench/pytorch_models.py) did not start; is python3-torch installed? "
                 "(bash tools/setup.sh --with-pytorch)")
        self.setup = json.loads(line)

    def measure(self, workload, steps, warmup):
        model, mode, batch, _ = workload
        request = {"model": model, "mode": mode, "batch": batch, "steps": steps, "warmup": warmup}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            fail(f"the PyTorch worker stopped during {request}")
        return json.loads(line)

    def close(self):
        close_worker(self.process)


def check_torch_setup(setup, threads):
    """Refuse a PyTorch that is not at its best: the comparison would flatter ember."""
    if not setup["blas"].startswith("openblas") and setup["blas"] != "mkl":
        fail(f"PyTorch would use {setup['blas']} BLAS ({setup['blas_library']}), not OpenBLAS; its Linear layers would be "
             "several times slower than they can be. Install libopenblas0-openmp (bash tools/setup.sh --with-pytorch) or "
             "select it: update-alternatives --config libblas.so.3-x86_64-linux-gnu")
    if setup["allocator"] != "jemalloc":
        fail(f"PyTorch runs on {setup['allocator']}, not jemalloc (LD_PRELOAD={JEMALLOC} did not take); "
             "install libjemalloc2 (bash tools/setup.sh --with-pytorch)")
    if setup["threads"] != threads:
        fail(f"PyTorch runs {setup['threads']} threads, expected {threads}")


def run_ember(ember, workload, steps, warmup):
    model, mode, batch, threads = workload
    command = [ember, "bench", "--model", model, "--batch-size", str(batch), "--threads", str(threads), "--steps", str(steps),
               "--warmup", str(warmup), "--json", "--data", "attention-retrieval" if model == "attention-mse" else "fashion-mnist"]
    if mode == "training":
        command.append("--training")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(" ".join(command) + " failed:\n" + result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def warmup_for(steps, quick):
    return 1 if quick else max(2, min(10, steps // 10))


def measure_models(args, ember, workers, peers):
    """samples[w]: {"ember": [img/s per round], label: [...] for each peer's label}."""
    workloads = [(m, mode, b, t) for m in args.models for mode in MODES for b in args.batches for t in THREADS]
    # Calibration: a few steps of each side give the step count for about --seconds on the slowest.
    steps = {}
    for w in workloads:
        slowest = run_ember(ember, w, 2, 1)["ms_per_step"]
        for p in range(len(peers)):
            slowest = max(slowest, workers[p, w[3]].measure(w, 2, 1)["ms_per_step"])
        steps[w] = max(2 if args.quick else 3, min(20000, math.ceil(args.seconds / max(slowest / 1000.0, 1e-6))))
    samples = {w: {side: [] for side in ["ember"] + peers} for w in workloads}
    isa = "?"
    for round_index in range(args.rounds):
        started = time.monotonic()
        for w in workloads:
            warmup = warmup_for(steps[w], args.quick)
            e = run_ember(ember, w, steps[w], warmup)
            isa = e.get("isa", isa)
            # Both sides: img/s at the median step time of the run (one slow step, a page
            # fault or a neighbour, moves the mean but not the median).
            samples[w]["ember"].append(e["median_img_per_s"])
            for p, label in enumerate(peers):
                samples[w][label].append(workers[p, w[3]].measure(w, steps[w], warmup)["median_img_per_s"])
        print(f"round {round_index + 1}/{args.rounds}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return workloads, steps, samples, isa


def measure_gemm(args, ember_bench, out):
    json_path = os.path.join(out, "gemm.json")
    command = [ember_bench, "--benchmark_filter=^gemm/.*/(ember|onednn|openblas)/", "--benchmark_out=" + json_path,
               "--benchmark_out_format=json", "--benchmark_enable_random_interleaving=true"]
    if args.quick:
        command += ["--benchmark_min_time=0.02", "--benchmark_repetitions=1"]
    else:
        command += ["--benchmark_min_time=0.2", "--benchmark_repetitions=" + str(args.rounds),
                    "--benchmark_report_aggregates_only=true"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(" ".join(command) + " failed:\n" + result.stderr)
    # Rows in gemm_bench's order (the run itself is shuffled).
    listed = subprocess.run([ember_bench, "--benchmark_list_tests", command[1]], capture_output=True, text=True).stdout
    order = {}
    for name in listed.split():
        order.setdefault(name.split("/")[1], len(order))
    with open(json_path) as f:
        report = json.load(f)
    table = {}  # (shape, threads) -> {implementation: GFLOP/s}
    for b in report["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        parts = b["run_name"].split("/")  # gemm/<shape>/<implementation>/threads:<n>/real_time
        shape, implementation, threads = parts[1], parts[2], int(parts[3].split(":")[1])
        table.setdefault((shape, threads), {})[implementation] = b["GFLOP/s"]
    return dict(sorted(table.items(), key=lambda item: (order.get(item[0][0], len(order)), item[0][1])))


def spread(values):
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m > 0 else 0.0



def ratio_ticks(first, last, x, top, axis_y):
    """The vertical grid lines and labels (1/2×, 1×, 2×, ...) of a log2 ratio axis, powers
    first..last of 2, at most ~9 labelled; x maps a ratio to its x coordinate."""
    parts = []
    every = max(1, math.ceil((last - first) / 8))
    for power in range(first, last + 1):
        if power % every:
            continue
        tick = x(2.0 ** power)
        label = f"{2 ** power}×" if power >= 0 else f"1/{2 ** -power}×"
        parts.append(f'<line x1="{tick:.1f}" y1="{top - 4}" x2="{tick:.1f}" y2="{axis_y}" stroke="#ddd"/>')
        parts.append(f'<text x="{tick:.1f}" y="{axis_y + 14}" text-anchor="middle">{label}</text>')
    return parts

def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def peer_labels(setups, pythons):
    """"PyTorch <version>" per peer; the python too when two peers share a version."""
    labels = [f"PyTorch {setup['torch']}" for setup in setups]
    return [f"{label} ({python})" if labels.count(label) > 1 else label for label, python in zip(labels, pythons)]


def markdown(args, setups, peers, isa, workloads, steps, samples, gemm, command_line):
    """One peer: columns named "PyTorch" (the single-peer tables as they always were); several:
    a column and a ratio per peer, named by its label."""
    median = {w: {side: statistics.median(v) for side, v in s.items()} for w, s in samples.items()}
    names = ["PyTorch"] if len(peers) == 1 else peers
    lines = ["# ember vs PyTorch", ""]
    if args.quick:
        lines += ["**--quick smoke run: too few, too short rounds for figures to mean anything.**", ""]
    lines += [f"- {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cpu_name()}, {os.cpu_count()} cores; "
              f"ember kernels {isa}"]
    for setup, python in zip(setups, args.torch_python):
        where = "" if len(peers) == 1 else f" ({python})"
        lines.append(f"- PyTorch {setup['torch']}{where}, BLAS {setup['blas']} ({setup['blas_library']}), allocator "
                     f"{setup['allocator']}, oneDNN for convolutions: {'yes' if setup['onednn'] else 'no'}; "
                     "torch.set_num_threads(n)")
    order = "(ember, PyTorch, ember, ...)" if len(peers) == 1 else "(ember, then each PyTorch in turn, ember, ...)"
    lines += [f"- {args.rounds} interleaved rounds {order}, medians; about {args.seconds:g} s per "
              f"measurement, each giving img/s at its median step time; spread = (max - min) / median of the {'noisier' if len(peers) == 1 else 'noisiest'} side",
              f"- `{command_line}`", ""]
    for mode in MODES:
        lines += [f"## {mode.capitalize()} (img/s)", "",
                  "| model | batch | threads | steps | ember | " + " | ".join(names) + " | " +
                  " | ".join("ember / " + n for n in names) + " | spread |",
                  "|---|---:|---:|---:|---:|" + "---:|" * (2 * len(peers) + 1)]
        for w in workloads:
            if w[1] != mode:
                continue
            e = median[w]["ember"]
            noise = max(spread(v) for v in samples[w].values())
            lines.append(f"| {w[0]} | {w[2]} | {w[3]} | {steps[w]} | {e:.0f} | " +
                         " | ".join(f"{median[w][p]:.0f}" for p in peers) + " | " +
                         " | ".join(f"{e / median[w][p]:.2f}×" for p in peers) + f" | {100 * noise:.0f}% |")
        lines.append("")
    lines += ["## Thread scaling (img/s at 2 threads / at 1 thread)", "",
              "| model | mode | batch | ember | " + " | ".join(names) + " |", "|---|---|---:|---:|" + "---:|" * len(peers)]
    for w in workloads:
        if w[3] != 1 or (w[0], w[1], w[2], 2) not in median:
            continue
        w2 = (w[0], w[1], w[2], 2)
        lines.append(f"| {w[0]} | {w[1]} | {w[2]} | " +
                     " | ".join(f"{median[w2][side] / median[w][side]:.2f}×" for side in ["ember"] + peers) + " |")
    lines.append("")
    if gemm:
        lines += ["## GEMM (GFLOP/s, Y = X Wᵀ, ember_bench medians)", "",
                  "| shape | threads | ember | oneDNN | OpenBLAS | ember / oneDNN | ember / OpenBLAS |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for (shape, threads), row in gemm.items():
            def cell(name):
                return f"{row[name]:.1f}" if name in row else "—"

            def ratio(name):
                return f"{row['ember'] / row[name]:.2f}×" if name in row and "ember" in row else "—"
            lines.append(f"| {shape} | {threads} | {cell('ember')} | {cell('onednn')} | {cell('openblas')} | "
                         f"{ratio('onednn')} | {ratio('openblas')} |")
        lines.append("")
    return "\n".join(lines)


PEER_COLOURS = ["#1f77b4", "#e8590c", "#9c36b5", "#2f9e44"]  # with several peers, one colour each


def svg_chart(args, workloads, samples, peers):
    """Horizontal bars on a log scale from the 1x line to each ember/PyTorch ratio: one bar per
    workload, green or red, for one peer; one bar per workload and peer, a colour each, for several."""
    ratios = [(w, p, statistics.median(samples[w]["ember"]) / statistics.median(samples[w][p]))
              for w in workloads for p in peers]
    low = min([0.5] + [r / 1.25 for _, _, r in ratios])
    high = max([2.0] + [r * 1.25 for _, _, r in ratios])
    first, last = math.floor(math.log2(low)), math.ceil(math.log2(high))
    several = len(peers) > 1
    bar = 11 if several else 16
    gap = 5 if several else 0
    group = bar * len(peers) + gap
    label_width, plot_width, top, bottom = 190, 560, 46 + (18 if several else 0), 34
    height = top + group * len(workloads) + bottom
    width = label_width + plot_width + 70

    def x(ratio):
        return label_width + plot_width * (math.log2(ratio) - first) / (last - first)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">ember / PyTorch throughput (img/s), '
             f'median of {args.rounds} interleaved rounds{" (--quick)" if args.quick else ""}</text>',
             f'<text x="{width / 2}" y="34" text-anchor="middle" fill="#555">right of the line: ember faster; '
             'log scale</text>']
    if several:
        for i, peer in enumerate(peers):
            left = label_width + i * 190
            parts.append(f'<rect x="{left}" y="44" width="12" height="10" fill="{PEER_COLOURS[i % len(PEER_COLOURS)]}"/>')
            parts.append(f'<text x="{left + 16}" y="53">ember / {escape(peer)}</text>')
    parts.extend(ratio_ticks(first, last, x, top, height - bottom))
    previous_model = None
    for i, w in enumerate(workloads):
        y0 = top + i * group
        if w[0] != previous_model and i > 0:
            parts.append(f'<line x1="4" y1="{y0 - gap / 2:.1f}" x2="{width - 4}" y2="{y0 - gap / 2:.1f}" stroke="#999"/>')
        previous_model = w[0]
        label = f"{w[0]} {'train' if w[1] == 'training' else 'infer'} b{w[2]} {w[3]}t"
        parts.append(f'<text x="{label_width - 6}" y="{y0 + (bar * len(peers)) / 2 + 4:.0f}" text-anchor="end">'
                     f'{escape(label)}</text>')
        for k, peer in enumerate(peers):
            ratio = statistics.median(samples[w]["ember"]) / statistics.median(samples[w][peer])
            y = y0 + k * bar
            left, right = sorted((x(1.0), x(ratio)))
            if several:
                colour, height_, title = PEER_COLOURS[k % len(PEER_COLOURS)], bar - 1, f"{label}, ember / {peer}"
            else:
                colour, height_, title = "#2b8a3e" if ratio >= 1.0 else "#c92a2a", bar - 5, label
            parts.append(f'<rect x="{left:.1f}" y="{y + (0 if several else 3)}" width="{max(right - left, 1):.1f}" '
                         f'height="{height_}" fill="{colour}"><title>{escape(title)}: {ratio:.2f}×</title></rect>')
            anchor, at = ("start", right + 4) if ratio >= 1.0 else ("end", left - 4)
            size = ' font-size="9"' if several else ""
            parts.append(f'<text x="{at:.1f}" y="{y + (bar - 2 if several else 12)}" text-anchor="{anchor}"{size}>'
                         f'{ratio:.2f}×</text>')
    one = x(1.0)
    parts.append(f'<line x1="{one:.1f}" y1="{top - 4}" x2="{one:.1f}" y2="{height - bottom}" stroke="black" '
                 'stroke-width="1.5"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    args = parse_args()
    ember = os.path.join(args.build, "ember")
    ember_bench = os.path.join(args.build, "ember_bench")
    for binary in [ember] + ([] if args.no_gemm else [ember_bench]):
        if not os.access(binary, os.X_OK):
            fail(f"no {binary}: build first (bash tools/setup.sh), or point --build at a build directory")
    if not os.path.exists(JEMALLOC):
        fail(f"no {JEMALLOC}: PyTorch must run with jemalloc preloaded; install libjemalloc2 "
             "(bash tools/setup.sh --with-pytorch)")
    os.makedirs(args.out, exist_ok=True)
    command_line = "bash bench/compare.sh " + " ".join(sys.argv[1:])
    started = time.monotonic()

    workers = {}  # (peer index, threads) -> TorchWorker
    try:
        for p, python in enumerate(args.torch_python):
            for threads in THREADS:
                workers[p, threads] = TorchWorker(threads, python)
                check_torch_setup(workers[p, threads].setup, threads)
        setups = [workers[p, THREADS[0]].setup for p in range(len(args.torch_python))]
        peers = peer_labels(setups, args.torch_python)
        for setup in setups:
            print(f"PyTorch {setup['torch']}: BLAS {setup['blas']} ({setup['blas_library']}), allocator "
                  f"{setup['allocator']}", file=sys.stderr)
        workloads, steps, samples, isa = measure_models(args, ember, workers, peers)
    finally:
        for worker in workers.values():
            worker.close()
    gemm = {} if args.no_gemm else measure_gemm(args, ember_bench, args.out)

    paths = {kind: os.path.join(args.out, "comparison." + kind) for kind in ("md", "svg", "json")}
    with open(paths["md"], "w") as f:
        f.write(markdown(args, setups, peers, isa, workloads, steps, samples, gemm, command_line))
    with open(paths["svg"], "w") as f:
        f.write(svg_chart(args, workloads, samples, peers))
    # The first peer keeps the single-peer fields ("pytorch", "pytorch_img_per_s"); with several,
    # "peers" and each workload's "peers_img_per_s" hold them all.
    document = {"command": command_line, "pytorch": setups[0], "isa": isa, "rounds": args.rounds,
                "workloads": [{"model": w[0], "mode": w[1], "batch": w[2], "threads": w[3], "steps": steps[w],
                               "ember_img_per_s": samples[w]["ember"], "pytorch_img_per_s": samples[w][peers[0]],
                               **({"peers_img_per_s": {p: samples[w][p] for p in peers}} if len(peers) > 1 else {})}
                              for w in workloads],
                "gemm_gflops": [{"shape": s, "threads": t, **row} for (s, t), row in gemm.items()]}
    if len(peers) > 1:
        document["peers"] = [{"label": label, "python": python, "setup": setup}
                             for label, python, setup in zip(peers, args.torch_python, setups)]
    with open(paths["json"], "w") as f:
        json.dump(document, f, indent=1)
    for label, setup in zip(peers, setups):
        print(f"{label} used BLAS {setup['blas']} ({setup['blas_library']}) and allocator {setup['allocator']}")
    print(f"{time.monotonic() - started:.0f} s; wrote {paths['md']}, {paths['svg']}, {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
