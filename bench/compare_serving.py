#!/usr/bin/python3
"""Serving: ember's InferenceSession vs ONNX Runtime and OpenVINO, interleaved; run it through
bench/compare_serving.sh.

Cases: every built-in image model (seed-cnn, lenet, attn-cnn, resnet), batch 1, 64 and 256,
1 and 2 threads, one caller calling one model over and over, as a server does. Each round
runs every case once in every engine (the engines' order rotating from round to round);
the figure is the median over the rounds, so a noisy neighbour hurts every engine alike.
- ember: `ember bench --session --callers 1 --threads T` (a fresh process per measurement;
  it times only the calls). If this ember's --session has no --threads, only 1 thread is
  measured and the outputs say so.
- ONNX Runtime and OpenVINO: bench/serving_peer.py, one long-lived process per engine in
  the peers' virtual environment (tools/setup.sh --with-peers), on the model exported to
  ONNX by Debian's PyTorch 1.13 (bench/export_onnx.py). serving_peer.py lists each
  engine's settings.
Every engine runs the same architecture. With Fashion-MNIST installed, the weights are the
same too: a short `ember train --save` makes a checkpoint, ember serves it and the ONNX
files carry its weights; the outputs of the first test images are then compared (ember
predict vs each peer). Each measurement's call count comes from a calibration pass, so one
measurement takes about --seconds in each engine.

Writes <out>/serving.md (tables), <out>/serving.svg (ember / peer img/s, every case) and
<out>/serving.json (every sample). Standard library only.
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

from compare import cpu_name
import serving_report
from worker_process import close_worker  # the script's folder is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_PYTHON = "/usr/bin/python3"  # Debian's python3-torch 1.13: its legacy ONNX exporter
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
MODELS = ["seed-cnn", "lenet", "attn-cnn", "resnet"]
SAMPLE_SHAPES = {"seed-cnn": [1, 28, 28], "lenet": [1, 32, 32], "attn-cnn": [1, 28, 28], "resnet": [1, 28, 28]}
BATCHES = [1, 64, 256]
THREADS = [1, 2]
PEERS = ["onnxruntime", "openvino"]
PARITY_IMAGES = 16


def fail(message):
    print("compare_serving: " + message, file=sys.stderr)
    sys.exit(1)


def default_peers_python():
    venv = os.environ.get("EMBER_PEERS_VENV", os.path.join(ROOT, "build", "peers-venv"))
    return os.path.join(venv, "bin", "python")


def integers(parser, name, text):
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"--{name}: expected comma-separated positive integers, found {text}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="ember's InferenceSession vs ONNX Runtime and OpenVINO, interleaved.")
    parser.add_argument("--build", default=os.environ.get("EMBER_BUILD", os.path.join(ROOT, "build", "release")),
                        help="directory with the ember binary (default: build/release, or $EMBER_BUILD)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="directory for the outputs")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the figure is the median (default 5)")
    parser.add_argument("--seconds", type=float, default=0.5, help="target length of one measurement (default 0.5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of ~0.05 s")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes (default 1,64,256)")
    parser.add_argument("--threads", default=",".join(map(str, THREADS)), help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    parser.add_argument("--peers-python", default=default_peers_python(),
                        help="python of the peers' venv (default: $EMBER_PEERS_VENV/bin/python, else build/peers-venv)")
    parser.add_argument("--imported", default="",
                        help="instead of the built-in models, serve ONNX files exported by PyTorch as they are, in every "
                             "engine (ember imports them): NAME=FILE:CxHxW,... e.g. "
                             "lenet-torch=tests/data/onnx/lenet.onnx:1x32x32")
    parser.add_argument("--fresh-weights", action="store_true",
                        help="no shared checkpoint: ember and the peers each initialise their own weights; no parity check")
    parser.add_argument("--dry-run", action="store_true",
                        help="measure nothing: write the outputs from canned numbers (tests the argument parsing and writers)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 0.05
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error("--models: unknown or none: " + ", ".join(unknown) + "; known: " + ", ".join(MODELS))
    args.peers = [p for p in args.peers.split(",") if p]
    if not args.peers or any(p not in PEERS for p in args.peers):
        parser.error("--peers: expected a comma-separated subset of " + ",".join(PEERS) + ", found " + ",".join(args.peers))
    args.batches = integers(parser, "batches", args.batches)
    args.threads = integers(parser, "threads", args.threads)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.seconds > 0:
        parser.error("--seconds must be positive")
    return args


class PeerWorker:
    """bench/serving_peer.py for one engine, kept running for the whole comparison."""

    def __init__(self, engine, python):
        self.engine = engine
        self.process = subprocess.Popen([python, os.path.join(ROOT, "bench", "serving_peer.py"), "--engine", engine],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            fail(f"the {engine} worker ({python} bench/serving_peer.py) did not start; make the peers' venv with "
                 "bash tools/setup.sh --with-peers, or point --peers-python at a python with onnxruntime and openvino")
        self.setup = json.loads(line)

    def ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            fail(f"the {self.engine} worker stopped during {request.get('op')} of {request.get('onnx')}")
        answer = json.loads(line)
        if "error" in answer:
            fail(f"{self.engine}, {request.get('op')} {request.get('onnx')} batch {request.get('batch')}: {answer['error']}")
        return answer

    def close(self):
        close_worker(self.process)


def run(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{what} failed: {' '.join(command)}\n{result.stderr}")
    return result.stdout


def ember_supports_session_threads(ember):
    probe = [ember, "bench", "--model", "seed-cnn", "--session", "--callers", "1", "--batch-size", "1", "--calls", "1",
             "--warmup", "0", "--threads", "1", "--json"]
    return subprocess.run(probe, capture_output=True, text=True).returncode == 0


def imported_models(args):
    """--imported NAME=FILE:CxHxW,...: what each engine serves is the file itself."""
    prepared = {}
    for item in filter(None, args.imported.split(",")):
        name, _, rest = item.partition("=")
        path, _, shape = rest.rpartition(":")
        if not name or not path or not shape:
            fail(f"--imported: expected NAME=FILE:CxHxW, found '{item}'")
        SAMPLE_SHAPES[name] = [int(d) for d in shape.split("x")]
        prepared[name] = (["--checkpoint", os.path.abspath(path)], os.path.abspath(path))
    args.models = list(prepared)
    return prepared


def prepare_models(args, ember, folder):
    """Per model: (what ember serves: ["--model", M] or ["--checkpoint", C], its ONNX file); and the exporter's torch."""
    os.makedirs(folder, exist_ok=True)
    same_weights = not args.fresh_weights and os.path.isdir(FASHION_MNIST)
    prepared, torch_version = {}, "?"
    for model in args.models:
        onnx = os.path.join(folder, model + ".onnx")
        export = [EXPORT_PYTHON, os.path.join(ROOT, "bench", "export_onnx.py"), "--model", model, "--out", onnx]
        served = ["--model", model]
        if same_weights:
            checkpoint = os.path.join(folder, model + ".safetensors")
            # 8 Adam steps: weights that are no longer the initialisation, and BatchNorm statistics.
            run([ember, "train", "--model", model, "--data", "fashion-mnist", "--epochs", "1", "--train-limit", "512",
                 "--test-limit", "64", "--batch-size", "64", "--save", checkpoint], "making a checkpoint")
            export += ["--checkpoint", checkpoint]
            served = ["--checkpoint", checkpoint]
        torch_version = json.loads(run(export, "the ONNX export (python3-torch: tools/setup.sh --with-pytorch)"))["torch"]
        prepared[model] = (served, onnx)
    return prepared, torch_version, same_weights


def ember_measure(ember, served, case, calls, warmup, with_threads):
    command = [ember, "bench", *served, "--session", "--callers", "1", "--batch-size", str(case[1]), "--calls",
               str(calls), "--warmup", str(warmup), "--json"]
    if with_threads:
        command += ["--threads", str(case[2])]
    return json.loads(run(command, "ember").strip().splitlines()[-1])


def peer_measure(worker, onnx, case, calls, warmup):
    return worker.ask({"op": "measure", "onnx": onnx, "shape": SAMPLE_SHAPES[case[0]], "batch": case[1],
                       "threads": case[2], "calls": calls, "warmup": warmup})


def sample(answer):
    return {key: answer[key] for key in ("img_per_s", "p50_ms", "p99_ms")}


def measure(args, ember, prepared, workers, with_threads):
    cases = [(m, b, t) for m in args.models for b in args.batches for t in args.threads]
    engines = ["ember"] + args.peers
    minimum = 5 if args.quick else 20

    def once(engine, case, calls, warmup):
        served, onnx = prepared[case[0]]
        if engine == "ember":
            return ember_measure(ember, served, case, calls, warmup, with_threads)
        return peer_measure(workers[engine], onnx, case, calls, warmup)

    calls = {}
    isa = "?"
    for case in cases:  # calibration: a few calls give each engine's call count for about --seconds
        calls[case] = {}
        for engine in engines:
            answer = once(engine, case, 3, 1)
            isa = answer.get("isa", isa)
            per_call = case[1] / max(answer["img_per_s"], 1e-9)
            calls[case][engine] = max(minimum, min(200000, math.ceil(args.seconds / per_call)))
    samples = {case: {engine: [] for engine in engines} for case in cases}
    for round_index in range(args.rounds):
        started = time.monotonic()
        order = engines[round_index % len(engines):] + engines[:round_index % len(engines)]
        for case in cases:
            for engine in order:
                n = calls[case][engine]
                warmup = 2 if args.quick else max(2, min(50, n // 10))
                samples[case][engine].append(sample(once(engine, case, n, warmup)))
        print(f"round {round_index + 1}/{args.rounds}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return cases, engines, samples, calls, isa


def fashion_mnist_images(count, pad):
    """The first `count` Fashion-MNIST test images, /255, zero-padded by `pad` on each side."""
    import gzip
    with gzip.open(os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read(16 + count * 784)
    images = []
    for i in range(count):
        pixels = raw[16 + 784 * i:16 + 784 * (i + 1)]
        rows = [[pixels[28 * r + c] / 255.0 for c in range(28)] for r in range(28)]
        rows = [[0.0] * pad + row + [0.0] * pad for row in rows]
        blank = [0.0] * (28 + 2 * pad)
        images.append([blank] * pad + rows + [blank] * pad)
    return images


def softmax(logits):
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    return [v / sum(e) for v in e]


def parity(args, ember, prepared, workers):
    """ember predict's class probabilities (4 decimals) vs each peer's on the same images and weights."""
    lines = []
    for model in args.models:
        served, onnx = prepared[model]
        out = run([ember, "predict", *served, "--input", os.path.join(FASHION_MNIST, "t10k-images-idx3-ubyte.gz"),
                   "--top", "10", "--limit", str(PARITY_IMAGES)], "ember predict")
        ember_p = []
        for line in out.strip().splitlines():
            probabilities = [0.0] * 10
            for pair in line.split()[1:]:
                label, p = pair.split(":")
                probabilities[int(label)] = float(p)
            ember_p.append(probabilities)
        shape = SAMPLE_SHAPES[model]
        images = fashion_mnist_images(PARITY_IMAGES, (shape[1] - 28) // 2)
        for engine, worker in workers.items():
            logits = worker.ask({"op": "predict", "onnx": onnx, "threads": 1, "images": images, "shape": shape})["logits"]
            peer_p = [softmax(row) for row in logits]
            worst = max(abs(a - b) for pe, pp in zip(ember_p, peer_p) for a, b in zip(pe, pp))
            agree = sum(pe.index(max(pe)) == pp.index(max(pp)) for pe, pp in zip(ember_p, peer_p))
            verdict = "agree" if worst <= 1e-3 else "DIFFER"
            lines.append(f"{model}, ember vs {serving_report.NAMES[engine]}: {verdict}; largest class-probability "
                         f"difference {worst:.1e} over {PARITY_IMAGES} Fashion-MNIST test images (ember prints 4 "
                         f"decimals), top-1 class the same for {agree}/{PARITY_IMAGES}")
    return lines


def ember_info(ember):
    lines = run([ember, "info"], "ember info").strip().splitlines()
    return ["ember info: " + "; ".join(" ".join(line.split()) for line in lines)]


def engine_notes(args, torch_version, same_weights, with_threads):
    exported = (f"Models exported to ONNX by PyTorch {torch_version} (legacy exporter, opset 14, dynamic batch axis); "
                + ("the same weights in every engine (an ember checkpoint after 8 Adam steps on Fashion-MNIST)"
                   if same_weights else "each engine with its own fresh weights (same architecture)"))
    if args.imported:
        exported = ("ONNX files given (--imported), served as they are by every engine: ember imports each "
                    "(`ember bench --session --checkpoint FILE.onnx`), so all run the same graph and weights")
    notes = [exported,
             "ember: `ember bench --session --callers 1" + (" --threads T" if with_threads else "") +
             "` (one InferenceSession planned for the batch)"]
    if "onnxruntime" in args.peers:
        notes.append("ONNX Runtime: CPU provider, intra_op_num_threads = T, inter_op_num_threads = 1, sequential "
                     "execution, ORT_ENABLE_ALL; session.run from Python")
    if "openvino" in args.peers:
        notes.append("OpenVINO: CPU, batch fixed by reshape, INFERENCE_NUM_THREADS = T, PERFORMANCE_HINT LATENCY, "
                     "INFERENCE_PRECISION_HINT f32 (else it computes in bf16 on CPUs with AVX512-BF16 or AMX); "
                     "infer from Python")
    notes.append("Peers are called from Python (one long-lived process each): the Python around a call is counted, as "
                 "in a Python server; ember's figures are its C++ calls")
    if not with_threads:
        notes.append("**This ember's `bench --session` has no --threads: only 1 thread was measured.**")
    return notes


def dry_run(args, command_line):
    cases = [(m, b, t) for m in args.models for b in args.batches for t in args.threads]
    engines = ["ember"] + args.peers
    samples, calls = serving_report.canned(cases, engines, args.rounds)
    result = {"cases": cases, "engines": engines, "samples": samples, "calls": calls, "dry_run": True,
              "setup": {p: {"engine": p, "version": "0.0-canned"} for p in args.peers},
              "machine": {"cpu": "canned CPU", "cores": 2, "isa": "avx512", "ember_info": []},
              "notes": engine_notes(args, "0.0-canned", True, True), "rounds": args.rounds, "seconds": args.seconds,
              "quick": args.quick, "command": command_line, "date": "2000-01-01 00:00",
              "parity": ["seed-cnn, ember vs ONNX Runtime: agree (canned)"]}
    return result


def main(argv=None):
    args = parse_args(argv)
    command_line = "bash bench/compare_serving.sh " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    if args.dry_run:
        paths = serving_report.write_all(dry_run(args, command_line), args.out)
        print(f"dry run; wrote {paths['md']}, {paths['svg']}, {paths['json']}")
        return 0
    ember = os.path.join(args.build, "ember")
    if not os.access(ember, os.X_OK):
        fail(f"no {ember}: build first (bash tools/setup.sh), or point --build at a build directory")
    if not os.access(args.peers_python, os.X_OK):
        fail(f"no {args.peers_python}: make the peers' venv with bash tools/setup.sh --with-peers, "
             "or give --peers-python")
    started = time.monotonic()
    with_threads = ember_supports_session_threads(ember)
    if not with_threads:
        args.threads = [1]
        print("compare_serving: this ember's bench --session rejects --threads; measuring 1 thread only", file=sys.stderr)
    if args.imported:
        prepared, torch_version, same_weights = imported_models(args), "(files given)", False
    else:
        prepared, torch_version, same_weights = prepare_models(args, ember, os.path.join(args.out, "serving-models"))
    workers = {}
    try:
        for engine in args.peers:
            workers[engine] = PeerWorker(engine, args.peers_python)
        parity_lines = parity(args, ember, prepared, workers) if same_weights else []
        cases, engines, samples, calls, isa = measure(args, ember, prepared, workers, with_threads)
    finally:
        for worker in workers.values():
            worker.close()
    result = {"cases": cases, "engines": engines, "samples": samples, "calls": calls,
              "setup": {e: w.setup for e, w in workers.items()},
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "isa": isa, "ember_info": ember_info(ember),
                          "platform": platform.platform(), "torch_export": torch_version},
              "notes": engine_notes(args, torch_version, same_weights, with_threads), "parity": parity_lines,
              "rounds": args.rounds, "seconds": args.seconds, "quick": args.quick, "command": command_line}
    paths = serving_report.write_all(result, args.out)
    print(f"{time.monotonic() - started:.0f} s; wrote {paths['md']}, {paths['svg']}, {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
