#!/usr/bin/env python3
"""ember's exported ONNX models against ONNX Runtime, and Debian's ONNX checker.

  onnxruntime_parity.py ort DIR     every model in DIR/cases.json (tests/onnx/write_onnx_cases.cpp)
                                    run by ONNX Runtime gives ember's outputs within 1e-5
  onnxruntime_parity.py checker DIR onnx.checker.check_model(full_check=True) and strict
                                    shape inference accept every file

ONNX Runtime comes from PyPI only, in the peers' venv (tools/setup.sh --with-peers): the
interpreter is $EMBER_PEERS_PYTHON, else $EMBER_PEERS_VENV/bin/python, else
build/peers-venv/bin/python in the source tree; the checker is Debian's python3-onnx. Exits 77 (CTest's SKIP_RETURN_CODE) when the
interpreter or its module is missing, so a machine without them skips instead of failing.
"""
import json
import os
import subprocess
import sys

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 1e-5


def peers_python():
    venv = os.environ.get("EMBER_PEERS_VENV", os.path.join(HERE, "..", "..", "build", "peers-venv"))
    candidates = [os.environ.get("EMBER_PEERS_PYTHON", ""), os.path.join(venv, "bin", "python")]
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "import onnxruntime, numpy"], capture_output=True)
            if probe.returncode == 0:
                return candidate
    return None


def run_ort(directory):
    import numpy as np
    import onnxruntime as ort

    cases = json.load(open(os.path.join(directory, "cases.json")))
    failures = 0
    for case in cases:
        x = np.fromfile(os.path.join(directory, case["input"]), dtype="<f4").reshape(case["input_shape"])
        expected = np.fromfile(os.path.join(directory, case["output"]), dtype="<f4").reshape(case["output_shape"])
        for name in case["onnx"]:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(os.path.join(directory, name), options, providers=["CPUExecutionProvider"])
            (found,) = session.run(None, {"input": x})
            error = float(np.max(np.abs(found - expected)))
            # The batch is dynamic: one sample alone gives the same row.
            (single,) = session.run(None, {"input": x[2:3]})
            single_error = float(np.max(np.abs(single[0] - expected[2])))
            ok = found.shape == expected.shape and error <= TOLERANCE and single_error <= TOLERANCE
            print(f"{'ok  ' if ok else 'FAIL'} {name}: max |ort - ember| {error:.2e} (batch 5), {single_error:.2e} (batch 1)")
            failures += not ok
    print(f"onnxruntime {ort.__version__}: {len(cases)} models, {failures} failures")
    return 1 if failures else 0


def run_checker(directory):
    try:
        import onnx
    except ImportError:
        print("SKIP: no onnx module (Debian's python3-onnx) for", sys.executable)
        return SKIP
    cases = json.load(open(os.path.join(directory, "cases.json")))
    for case in cases:
        for name in case["onnx"]:
            path = os.path.join(directory, name)
            onnx.checker.check_model(path, full_check=True)
            onnx.shape_inference.infer_shapes(onnx.load(path), check_type=True, strict_mode=True)
            print("ok  ", name)
    print(f"onnx {onnx.__version__}: every file passes check_model(full_check=True)")
    return 0


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "checker":
        return run_checker(directory)
    if os.environ.get("EMBER_ORT_CHILD") != "1":
        python = peers_python()
        if python is None:
            print("SKIP: no Python with onnxruntime (set EMBER_PEERS_PYTHON, or run tools/setup.sh --with-peers)")
            return SKIP
        env = dict(os.environ, EMBER_ORT_CHILD="1")
        return subprocess.run([python, os.path.abspath(__file__), mode, directory], env=env).returncode
    return run_ort(directory)


if __name__ == "__main__":
    sys.exit(main())
