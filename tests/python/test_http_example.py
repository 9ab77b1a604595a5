"""The README's HTTP example (python/examples/serve_http.py): it answers with the
session's logits, refuses bad requests with the error's message, and survives a bounded
load test from several clients."""
import http.client
import importlib.util
import json
import os
import threading

import numpy as np
import pytest

import ember

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "python", "examples", "serve_http.py")


@pytest.fixture
def example():
    spec = importlib.util.spec_from_file_location("serve_http", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server(example, seed_checkpoint):
    session = ember.Session(seed_checkpoint, threads=2, max_batch=8)
    server = example.serve(session, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, session
    server.shutdown()
    server.server_close()


def post(port, body, content_type="application/json"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/predict", body, {"Content-Type": content_type})
    response = connection.getresponse()
    reply = json.loads(response.read())
    connection.close()
    return response.status, reply


def test_json_and_raw_requests_get_the_sessions_logits(server):
    server, session = server
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28), dtype=np.float32)
    expected = session.run(x)
    status, reply = post(server.server_port, json.dumps({"inputs": x.tolist()}))
    assert status == 200
    np.testing.assert_array_equal(np.array(reply["logits"], np.float32), expected)
    assert reply["classes"] == expected.argmax(axis=1).tolist()
    status, reply = post(server.server_port, x.astype("<f4").tobytes(), "application/octet-stream")
    assert status == 200 and np.array_equal(np.array(reply["logits"], np.float32), expected)


def test_bad_requests_get_400_with_the_message(server):
    server, _ = server
    status, reply = post(server.server_port, json.dumps({"inputs": np.zeros((2, 1, 27, 28)).tolist()}))
    assert status == 400 and "expected shape (N, 1, 28, 28)" in reply["error"]
    status, reply = post(server.server_port, b"\0" * 12, "application/octet-stream")
    assert status == 400 and "not a multiple of one sample's 784" in reply["error"]
    status, reply = post(server.server_port, json.dumps({"inputs": np.zeros((9, 1, 28, 28)).tolist()}))
    assert status == 400 and "exceeds the session's max_batch 8" in reply["error"]


def test_a_bounded_load_test_completes(example, server):
    server, session = server
    latencies, seconds = example.load_test(server.server_port, session.input_shape, requests=200, concurrency=4, batch=2)
    assert len(latencies) == 200 and seconds > 0
