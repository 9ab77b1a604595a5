"""Fixtures for the Python module's tests: the CLI, libember (for the C API), and small
checkpoints trained by the CLI. CTest passes their paths in the environment
(tests/CMakeLists.txt); PYTHONPATH points at the build tree's package."""
import ctypes
import os
import subprocess

import numpy as np
import pytest

import ember


def _path(variable):
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set (run through ctest)")
    return value


@pytest.fixture(scope="session")
def cli():
    return _path("EMBER_CLI")


def train_with_cli(cli, directory, model, *flags):
    path = os.path.join(str(directory), f"{model}.safetensors")
    subprocess.run([cli, "train", "--model", model, "--save", path, *flags], check=True, capture_output=True, text=True)
    return path


@pytest.fixture(scope="session")
def seed_checkpoint(cli, tmp_path_factory):
    """seed-cnn after 5 steps on Fashion-MNIST, with a normalization recorded."""
    return train_with_cli(cli, tmp_path_factory.mktemp("seed"), "seed-cnn", "--data", "fashion-mnist", "--max-steps", "5",
                          "--train-limit", "640", "--test-limit", "64", "--mean", "0.286", "--std", "0.353", "--threads", "1")


@pytest.fixture(scope="session")
def attn_checkpoint(cli, tmp_path_factory):
    """attn-cnn (conv, attention, LayerNorm, GELU) after 2 steps."""
    return train_with_cli(cli, tmp_path_factory.mktemp("attn"), "attn-cnn", "--data", "fashion-mnist", "--max-steps", "2",
                          "--train-limit", "128", "--test-limit", "32", "--threads", "1")


class CSession:
    """The C API's session (engine/ember.h) through ctypes: the reference the module's
    results must equal bit for bit."""

    def __init__(self, library, checkpoint, max_batch):
        self.lib = ctypes.CDLL(library)
        self.lib.ember_session_create.restype = ctypes.c_void_p
        self.lib.ember_session_create.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t]
        self.lib.ember_session_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64,
                                               ctypes.c_void_p, ctypes.c_size_t]
        self.lib.ember_session_output_elements.argtypes = [ctypes.c_void_p]
        self.lib.ember_session_output_elements.restype = ctypes.c_int64
        self.lib.ember_session_destroy.argtypes = [ctypes.c_void_p]
        error = ctypes.create_string_buffer(512)
        self.handle = self.lib.ember_session_create(checkpoint.encode(), max_batch, error, len(error))
        assert self.handle, error.value.decode()
        self.outputs = self.lib.ember_session_output_elements(self.handle)

    def run(self, x):
        out = np.empty((x.shape[0], self.outputs), np.float32)
        status = self.lib.ember_session_run(self.handle, x.ctypes.data, x.size, x.shape[0], out.ctypes.data, out.size)
        assert status == 0
        return out

    def close(self):
        self.lib.ember_session_destroy(self.handle)


@pytest.fixture
def c_session():
    opened = []

    def open_session(checkpoint, max_batch=64):
        session = CSession(_path("EMBER_LIBRARY"), checkpoint, max_batch)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


def random_inputs(session, batch, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, *session.input_shape), dtype=np.float32)
