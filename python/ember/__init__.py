"""ember: train and serve convolutional and attention networks on CPUs.

Serving::

    import numpy as np, ember
    session = ember.Session("model.safetensors", threads=2, max_batch=64)
    logits = session.run(np.zeros((8, *session.input_shape), np.float32))

Training::

    ember.train(model="seed-cnn", data="fashion-mnist", epochs=1, save="model.safetensors",
                callback=lambda metrics: print(metrics["test_accuracy"]))

Arrays are float32 and C-contiguous; the module reads and writes them in place, never
copying or converting them (a wrong dtype or layout raises ember.ShapeError, a
ValueError). Every error of the library is an ember.Error with its message.
"""

import json as _json
import os as _os
import tempfile as _tempfile

from ._ember import (  # noqa: F401 (the public API)
    Error,
    Session,
    ShapeError,
    export_onnx,
    import_onnx,
    info,
    load_spec,
    models,
    plan,
    train,
)
from ._ember import _check_spec, _version

__version__ = _version()
__all__ = ["Error", "ShapeError", "Session", "train", "plan", "load_spec", "save_spec", "models", "info", "export_onnx",
           "import_onnx"]


def save_spec(spec, path):
    """Writes a model spec (a dict, as load_spec returns) to `path` as JSON, after checking
    that ember can build it. The file is replaced atomically: a failure leaves any previous
    file untouched."""
    _check_spec(spec, str(path))
    text = _json.dumps(spec, indent=2) + "\n"
    directory = _os.path.dirname(_os.path.abspath(path))
    fd, temporary = _tempfile.mkstemp(dir=directory, prefix=_os.path.basename(path) + ".tmp-")
    try:
        with _os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            _os.fsync(f.fileno())
        _os.replace(temporary, path)
    except BaseException:
        _os.unlink(temporary)
        raise
