"""ember.Session: the same bits as the C++ session, arrays in place, every bad argument an
exception (never a crash), concurrent callers."""
import threading

import numpy as np
import pytest

import ember
from conftest import random_inputs


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_logits_equal_the_c_sessions_bit_for_bit(seed_checkpoint, c_session, threads, batch):
    session = ember.Session(seed_checkpoint, threads=threads, max_batch=64)
    x = random_inputs(session, batch)
    np.testing.assert_array_equal(session.run(x), c_session(seed_checkpoint).run(x))


def test_attention_model_equals_the_c_session(attn_checkpoint, c_session):
    session = ember.Session(attn_checkpoint, threads=2, max_batch=16)
    x = random_inputs(session, 16, seed=3)
    np.testing.assert_array_equal(session.run(x), c_session(attn_checkpoint, 16).run(x))


def test_out_is_written_in_place_and_returned(seed_checkpoint):
    session = ember.Session(seed_checkpoint)
    x = random_inputs(session, 5)
    out = np.full((5, 10), np.nan, np.float32)
    assert session.run(x, out=out) is out
    np.testing.assert_array_equal(out, session.run(x))


def test_the_model_description(seed_checkpoint):
    session = ember.Session(seed_checkpoint, threads=2, max_batch=32)
    assert session.input_shape == (1, 28, 28)
    assert session.output_shape == (10,)
    assert session.max_batch == 32 and session.threads == 2
    assert session.mean == pytest.approx(0.286) and session.std == pytest.approx(0.353)
    assert session.class_names is None or len(session.class_names) == 10
    assert session.run_settings["batch_size"] == 64
    assert "threads=2" in repr(session)


def test_an_empty_batch_gives_an_empty_result(seed_checkpoint):
    session = ember.Session(seed_checkpoint)
    assert session.run(np.empty((0, 1, 28, 28), np.float32)).shape == (0, 10)


def expect_shape_error(session, x, fragment, **keywords):
    with pytest.raises(ember.ShapeError) as raised:
        session.run(x, **keywords)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, ember.Error)
    assert fragment in str(raised.value)


def test_bad_inputs_are_value_errors_naming_what_was_found(seed_checkpoint):
    session = ember.Session(seed_checkpoint, max_batch=8)
    x = random_inputs(session, 4)
    expect_shape_error(session, x.astype(np.float64), "expected dtype float32 (native byte order), found float64")
    expect_shape_error(session, x.astype(">f4"), "found float32 big-endian (>f4)")
    expect_shape_error(session, x[:, :, ::2, :], "expected a C-contiguous array")
    expect_shape_error(session, np.asfortranarray(x[:, 0]), "expected a C-contiguous array")
    expect_shape_error(session, x.tolist(), "expected a numpy.ndarray of float32, found list")
    expect_shape_error(session, x[:, 0], "expected shape (N, 1, 28, 28)")
    expect_shape_error(session, np.zeros((9, 1, 28, 28), np.float32), "batch 9 exceeds the session's max_batch 8")
    unaligned = np.frombuffer(bytearray(4 * 784 + 1), np.float32, 784, offset=1).reshape(1, 1, 28, 28)
    expect_shape_error(session, unaligned, "not aligned")


def test_bad_outputs_are_value_errors(seed_checkpoint):
    session = ember.Session(seed_checkpoint)
    x = random_inputs(session, 4)
    expect_shape_error(session, x, "out: expected shape (4, 10), found (4, 11)", out=np.empty((4, 11), np.float32))
    expect_shape_error(session, x, "out: expected dtype float32", out=np.empty((4, 10), np.float64))
    read_only = np.empty((4, 10), np.float32)
    read_only.flags.writeable = False
    expect_shape_error(session, x, "read-only", out=read_only)
    shared = np.zeros(4 * 784 + 40, np.float32)
    expect_shape_error(session, shared[:4 * 784].reshape(4, 1, 28, 28), "shares memory with x",
                       out=shared[4 * 784 - 20:4 * 784 + 20].reshape(4, 10))


def test_a_closed_session_raises(seed_checkpoint):
    with ember.Session(seed_checkpoint) as session:
        x = random_inputs(session, 1)
        session.run(x)
    assert session.closed
    with pytest.raises(ember.Error, match="is closed"):
        session.run(x)


def test_bad_files_are_errors_naming_them(tmp_path):
    with pytest.raises(ember.Error, match="missing.safetensors"):
        ember.Session(str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ember.Error, match="corrupt.safetensors"):
        ember.Session(str(corrupt))


def test_bad_options_are_errors(seed_checkpoint):
    with pytest.raises(ember.Error, match="max batch must be at least 1, found 0"):
        ember.Session(seed_checkpoint, max_batch=0)
    with pytest.raises(ember.Error, match="threads must be 1 to 64, found 65"):
        ember.Session(seed_checkpoint, threads=65)
    with pytest.raises(TypeError):
        ember.Session(seed_checkpoint, 2)  # options are keywords


def test_four_python_threads_share_one_session(seed_checkpoint):
    session = ember.Session(seed_checkpoint, threads=2, max_batch=64)
    inputs = [random_inputs(session, batch, seed=batch) for batch in (1, 16, 33, 64)]
    expected = [session.run(x) for x in inputs]
    failures = []

    def call_repeatedly(index):
        out = np.empty_like(expected[index])
        for _ in range(25):
            session.run(inputs[index], out=out)
            if not np.array_equal(out, expected[index]):
                failures.append(index)
                return

    threads = [threading.Thread(target=call_repeatedly, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_an_exported_onnx_file_serves_the_same_bits(seed_checkpoint, tmp_path):
    onnx_path = str(tmp_path / "seed.onnx")
    ember.export_onnx(seed_checkpoint, onnx_path)
    from_checkpoint, from_onnx = ember.Session(seed_checkpoint), ember.Session(onnx_path)
    x = random_inputs(from_checkpoint, 9, seed=5)
    np.testing.assert_array_equal(from_onnx.run(x), from_checkpoint.run(x))
    assert from_onnx.mean == pytest.approx(0.286) and from_onnx.std == pytest.approx(0.353)
    imported = str(tmp_path / "imported.safetensors")
    ember.import_onnx(onnx_path, imported)
    np.testing.assert_array_equal(ember.Session(imported).run(x), from_checkpoint.run(x))
    with pytest.raises(ember.Error, match="missing.onnx"):
        ember.Session(str(tmp_path / "missing.onnx"))
