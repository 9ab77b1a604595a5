#!/usr/bin/env python3
"""A minimal HTTP endpoint serving an ember checkpoint, with Python's standard library only.

  PYTHONPATH=build/release/python python3 python/examples/serve_http.py model.safetensors --port 8080

POST /predict with a JSON body {"inputs": [...]} holding a batch of samples shaped
(N, *input_shape) (already normalized), or a raw little-endian float32 body with
Content-Type application/octet-stream; the reply is JSON {"logits": [[...]], "classes": [...]}.
GET /model describes the model. Requests are served by a thread each
(ThreadingHTTPServer); they share one ember.Session, which releases the GIL while it
computes, so its compute threads run requests at once.

  python3 python/examples/serve_http.py model.safetensors --load-test 2000 --concurrency 4

starts the server on a free loopback port and sends it a bounded loop of requests from
several client threads, then prints throughput and latency percentiles.
"""
import argparse
import http.client
import http.server
import json
import statistics
import threading
import time

import numpy as np

import ember


def make_handler(session):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a load test measures ember, not TCP set-up
        # Headers and body go out in two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK (40 ms on Linux) on every reply.
        disable_nagle_algorithm = True

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path != "/model":
                return self.reply(404, {"error": f"unknown path {self.path}; use GET /model or POST /predict"})
            self.reply(200, {"input_shape": session.input_shape, "output_shape": session.output_shape,
                             "max_batch": session.max_batch, "mean": session.mean, "std": session.std,
                             "class_names": session.class_names})

        def read_inputs(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Type") == "application/octet-stream":
                x = np.frombuffer(body, dtype="<f4")
                sample = int(np.prod(session.input_shape))
                if x.size % sample != 0:
                    raise ValueError(f"the body holds {x.size} floats, not a multiple of one sample's {sample}")
                return x.reshape(-1, *session.input_shape)
            return np.ascontiguousarray(json.loads(body)["inputs"], dtype=np.float32)

        def do_POST(self):
            if self.path != "/predict":
                return self.reply(404, {"error": f"unknown path {self.path}; use POST /predict"})
            try:
                logits = session.run(self.read_inputs())
            except (ValueError, KeyError, ember.Error) as e:  # ember.ShapeError is a ValueError
                return self.reply(400, {"error": str(e)})
            self.reply(200, {"logits": logits.tolist(), "classes": logits.argmax(axis=1).tolist()})

        def log_message(self, *args):  # quiet: a load test would print a line per request
            pass

    return Handler


def serve(session, port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(session))
    server.daemon_threads = True
    return server


def load_test(port, input_shape, requests, concurrency, batch):
    """Sends `requests` requests from `concurrency` threads (each with its own connection);
    returns the latencies in seconds and the wall time."""
    body = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32).astype("<f4").tobytes()
    latencies, lock = [], threading.Lock()

    def client(count):
        connection = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/octet-stream"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
            mine.append(time.perf_counter() - start)
        connection.close()
        with lock:
            latencies.extend(mine)

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=2, help="the session's compute threads")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--load-test", type=int, metavar="REQUESTS", help="serve on a free port and send this many requests")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1, help="samples per load-test request")
    args = parser.parse_args()

    session = ember.Session(args.checkpoint, threads=args.threads, max_batch=args.max_batch)
    server = serve(session, 0 if args.load_test else args.port)
    if not args.load_test:
        print(f"serving {args.checkpoint} on http://127.0.0.1:{server.server_port} (POST /predict, GET /model)")
        server.serve_forever()
        return
    threading.Thread(target=server.serve_forever, daemon=True).start()
    latencies, seconds = load_test(server.server_port, session.input_shape, args.load_test, args.concurrency, args.batch)
    server.shutdown()
    latencies.sort()
    percentile = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3  # noqa: E731
    print(f"{len(latencies)} requests of batch {args.batch} from {args.concurrency} clients in {seconds:.2f} s: "
          f"{len(latencies) / seconds:.0f} requests/s; latency p50 {percentile(0.5):.2f} ms, p99 {percentile(0.99):.2f} ms, "
          f"mean {statistics.mean(latencies) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
