"""The peer side of bench/compare_serving.py: ONNX Runtime or OpenVINO serving an ONNX model,
timed the way `ember bench --session --callers 1` times ember's InferenceSession.

  serving_peer.py --engine onnxruntime|openvino

Runs in the peers' virtual environment (tools/setup.sh --with-peers), one long-lived
process per engine so its start-up is paid once. Prints a JSON line describing the set-up
(engine, versions), then answers each request line with one JSON line:
  {"op": "measure", "onnx": F, "shape": [C, H, W], "batch": B, "threads": T, "calls": N, "warmup": W}
      -> {"img_per_s", "p50_ms", "p99_ms", "calls"}: N timed calls, one after another, on
         a batch of B random images made before the clock starts;
  {"op": "predict", "onnx": F, "threads": T, "images": [[...], ...], "shape": [C, H, W]}
      -> {"logits": [[...], ...]} (the output-parity check).

Each call is the engine's ordinary Python call, so the Python around it is part of what is
measured, as it would be in a Python server:
- ONNX Runtime: one InferenceSession per (model, threads), intra_op_num_threads = T,
  inter_op_num_threads = 1, ORT_SEQUENTIAL, ORT_ENABLE_ALL; session.run([output], {input: x}).
- OpenVINO: one compiled model per (model, batch, threads), the batch fixed by reshape (as
  ember's session is planned for its batch), on "CPU" with INFERENCE_NUM_THREADS = T,
  PERFORMANCE_HINT LATENCY and INFERENCE_PRECISION_HINT f32: without the last, OpenVINO
  runs in bf16 on CPUs with AVX512-BF16 or AMX, which is another (less exact) computation.
  request.infer({0: x}, share_inputs=True, share_outputs=True).
"""
import argparse
import json
import sys
import time

import numpy as np


def quantile(values, q):
    """As ember bench --session: the element at rank round(q * (n - 1))."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1) + 0.5)]


class OnnxRuntimePeer:
    def __init__(self):
        import onnxruntime
        self.ort = onnxruntime
        self.sessions = {}
        self.setup = {"engine": "onnxruntime", "version": onnxruntime.__version__,
                      "providers": onnxruntime.get_available_providers()}

    def runner(self, onnx, batch, threads):
        key = (onnx, threads)
        if key not in self.sessions:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.sessions[key] = self.ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        session = self.sessions[key]
        # The file's own names: "x"/"y" for bench/export_onnx.py, others for imported files.
        names = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda x: session.run([names[1]], {names[0]: x})[0]


class OpenVinoPeer:
    def __init__(self):
        import openvino
        self.f32 = openvino.Type.f32
        self.core = openvino.Core()
        self.models = {}
        self.setup = {"engine": "openvino", "version": openvino.get_version(),
                      "cpu": self.core.get_property("CPU", "FULL_DEVICE_NAME")}

    def runner(self, onnx, batch, threads):
        key = (onnx, batch, threads)
        if key not in self.models:
            model = self.core.read_model(onnx)
            shape = list(model.input(0).get_partial_shape().get_min_shape())
            model.reshape({0: [batch] + shape[1:]})
            compiled = self.core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "PERFORMANCE_HINT": "LATENCY",
                                                              "INFERENCE_PRECISION_HINT": "f32"})
            precision = compiled.get_property("INFERENCE_PRECISION_HINT")
            if precision != self.f32:
                raise RuntimeError(f"OpenVINO compiled {onnx} for {precision}, not f32")
            self.models[key] = (compiled, compiled.create_infer_request())
        _, request = self.models[key]
        return lambda x: request.infer({0: x}, share_inputs=True, share_outputs=True)[0]


def measure(peer, request):
    batch, calls, warmup = request["batch"], request["calls"], request["warmup"]
    run = peer.runner(request["onnx"], batch, request["threads"])
    x = np.random.default_rng(0).random((batch, *request["shape"]), dtype=np.float32)
    for _ in range(warmup):
        run(x)
    latencies = []
    start = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        run(x)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    return {"img_per_s": round(calls * batch / seconds, 2), "p50_ms": round(1e3 * quantile(latencies, 0.50), 4),
            "p99_ms": round(1e3 * quantile(latencies, 0.99), 4), "calls": calls}


def predict(peer, request):
    x = np.asarray(request["images"], dtype=np.float32).reshape(-1, *request["shape"])
    y = np.asarray(peer.runner(request["onnx"], x.shape[0], request["threads"])(x))
    return {"logits": y.tolist()}


def main():
    parser = argparse.ArgumentParser(description="ONNX Runtime or OpenVINO as a serving peer of ember.")
    parser.add_argument("--engine", required=True, choices=["onnxruntime", "openvino"])
    args = parser.parse_args()
    peer = OnnxRuntimePeer() if args.engine == "onnxruntime" else OpenVinoPeer()
    print(json.dumps(peer.setup), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = measure(peer, request) if request["op"] == "measure" else predict(peer, request)
        except Exception as error:  # reported to the driver, which names the case
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
