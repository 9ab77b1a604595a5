#!/usr/bin/python3
"""Tests of bench/compare_serving.py, run by CTest.

  compare_serving_test.py dry-run
      --help, the argument checks, and the markdown/SVG/JSON writers on canned numbers
      (--dry-run): needs nothing but the standard library.
  compare_serving_test.py quick BUILD_DIR
      the real harness, --quick, seed-cnn at batch 1 and 64: needs the peers' venv
      (tools/setup.sh --with-peers) and Debian's PyTorch; exits 77 (CTest: skipped) without.
"""
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "compare_serving.py")
SKIPPED = 77
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
        print("FAILED: " + message, file=sys.stderr)


def serving(*arguments):
    return subprocess.run([sys.executable, SCRIPT, *arguments], capture_output=True, text=True)


def table_rows(markdown, heading):
    """The data rows of the table under `## heading`."""
    section = markdown.split("## " + heading, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| model")]


def check_outputs(out, models, batches, threads, peers, rounds):
    cases = [(m, b, t) for m in models for b in batches for t in threads]
    with open(os.path.join(out, "serving.md")) as f:
        markdown = f.read()
    rows = table_rows(markdown, "Throughput")
    check(len(rows) == len(cases), f"throughput table: {len(rows)} rows, expected {len(cases)}")
    for row, case in zip(rows, cases):
        cells = [c.strip() for c in row.strip("|").split("|")]
        check(cells[:3] == [case[0], str(case[1]), str(case[2])], f"throughput row {row} is not case {case}")
        check(len(cells) == 3 + 1 + len(peers) + 2, f"throughput row {row}: expected ember, {peers}, ratio, spread")
        check(cells[-2].endswith(")") and "×" in cells[-2], f"throughput row {row}: no 'ratio× (peer)' cell")
    latency = table_rows(markdown, "Latency at batch 1") if 1 in batches else []
    expected = [c for c in cases if c[1] == 1]
    check(len(latency) == len(expected), f"latency table: {len(latency)} rows, expected {len(expected)}")
    for row in latency:
        check(row.count(" / ") == 1 + len(peers), f"latency row {row}: expected p50 / p99 for every engine")
    names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
    for peer in peers:
        check(names[peer] in markdown.split("## Throughput", 1)[1].splitlines()[2], f"no {names[peer]} column")
    svg = ElementTree.parse(os.path.join(out, "serving.svg")).getroot()
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.find("{http://www.w3.org/2000/svg}title") is not None]
    check(len(bars) == len(cases) * len(peers), f"chart: {len(bars)} bars, expected {len(cases) * len(peers)}")
    with open(os.path.join(out, "serving.json")) as f:
        document = json.load(f)
    check(len(document["cases"]) == len(cases), "json: wrong number of cases")
    for case in document["cases"]:
        check(sorted(case["samples"]) == sorted(["ember"] + peers), f"json: engines {sorted(case['samples'])}")
        check(all(len(s) == rounds for s in case["samples"].values()), "json: not one sample per round")
    return markdown


def dry_run():
    check(serving("--help").returncode == 0, "--help failed")
    for bad in (["--models", "seed-cnn,bogus"], ["--batches", "0"], ["--batches", "x"], ["--threads", ""],
                ["--peers", "tensorflow"], ["--rounds", "0"], ["--seconds", "0"]):
        result = serving("--dry-run", *bad)
        check(result.returncode == 2 and "error" in result.stderr, f"{bad} was accepted (exit {result.returncode})")
    with tempfile.TemporaryDirectory() as out:
        result = serving("--dry-run", "--out", out, "--models", "seed-cnn,resnet", "--batches", "1,64", "--rounds", "3")
        check(result.returncode == 0, "dry run failed: " + result.stderr)
        markdown = check_outputs(out, ["seed-cnn", "resnet"], [1, 64], [1, 2], ["onnxruntime", "openvino"], 3)
        check("canned" in markdown, "a dry run's tables do not say the numbers are canned")
        check("INFERENCE_PRECISION_HINT f32" in markdown, "the OpenVINO precision is not recorded")
    with tempfile.TemporaryDirectory() as out:
        result = serving("--dry-run", "--quick", "--out", out, "--peers", "openvino", "--batches", "64")
        check(result.returncode == 0, "dry run with one peer failed: " + result.stderr)
        check_outputs(out, ["seed-cnn", "lenet", "attn-cnn", "resnet"], [64], [1, 2], ["openvino"], 2)


def quick(build):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from compare_serving import EXPORT_PYTHON, default_peers_python
    peers_python = default_peers_python()
    if not os.access(peers_python, os.X_OK):
        print(f"skipped: no peers venv ({peers_python}; bash tools/setup.sh --with-peers)")
        return SKIPPED
    if subprocess.run([EXPORT_PYTHON, "-c", "import torch"], capture_output=True).returncode != 0:
        print("skipped: no Debian PyTorch for the ONNX export (bash tools/setup.sh --with-pytorch)")
        return SKIPPED
    with tempfile.TemporaryDirectory() as out:
        result = serving("--quick", "--build", build, "--out", out, "--models", "seed-cnn", "--batches", "1,64")
        print(result.stdout + result.stderr)
        check(result.returncode == 0, "the quick run failed")
        if result.returncode == 0:
            with open(os.path.join(out, "serving.json")) as f:
                threads = sorted({c["threads"] for c in json.load(f)["cases"]})
            markdown = check_outputs(out, ["seed-cnn"], [1, 64], threads, ["onnxruntime", "openvino"], 2)
            check("DIFFER" not in markdown, "ember's outputs differ from a peer's on the same weights")
    return 0


def main():
    if sys.argv[1:] == ["dry-run"]:
        dry_run()
    elif len(sys.argv) == 3 and sys.argv[1] == "quick":
        if quick(sys.argv[2]) == SKIPPED:
            return SKIPPED
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{len(failures)} failure(s)" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
