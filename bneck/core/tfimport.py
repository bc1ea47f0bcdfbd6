"""Import TensorFlow without the C++ start-up chatter, and without losing anyone else's output.

The CUDA-enabled TensorFlow wheel prints CUDA-stub, oneDNN and absl lines to the
process's stderr (file descriptor 2) on machines without a GPU, from C++, where no
Python setting reaches. During the import, descriptor 2 is pointed at a pipe, and a
thread passes on every line that is not one of TensorFlow's log lines: the import
may run in a background thread while the main thread prints a progress bar, a
table or an error, and all of that still reaches the terminal (set
``BNECK_TF_LOGS=1`` to see TensorFlow's lines too).
"""

from __future__ import annotations

import os
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# bneck's networks are TensorFlow's: a KERAS_BACKEND (or keras.json "backend") of jax or torch would
# make `import keras` fail or build other models. The variable wins over keras.json.
_ASKED_BACKEND = os.environ.get("KERAS_BACKEND")
if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "tensorflow"

# What bneck's rows and cache keys assume of Keras' global settings (keras.json in KERAS_HOME, or set
# by the calling program): float32 numbers, channels last. Anything else is set back, once, saying so.
KERAS_DEFAULTS = {"floatx": "float32", "image_data_format": "channels_last", "dtype_policy": "float32"}
_SAID: set[str] = set()

# absl/glog lines ("I0000 00:00:1795.07 17090 port.cc:153] ..."), older timestamped ones
# ("2026-11-23 13:00:00.123: I tensorflow/..."), and two free-form notices.
_NOISE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    rb"|WARNING: All log messages before absl::InitializeLog"
    rb"|To enable the following instructions:)"
)
_LOCK = threading.Lock()


def _forward(read_fd: int, target_fd: int) -> None:
    """Copy what arrives on ``read_fd`` to ``target_fd``, line by line, dropping TensorFlow's log lines."""
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while True:
            data = pipe.read(65536)
            if not data:
                break
            pending += data
            *lines, pending = re.split(rb"(?<=[\n\r])", pending)
            for line in lines:
                if line and not _NOISE.match(line):
                    os.write(target_fd, line)
    if pending and not _NOISE.match(pending):
        os.write(target_fd, pending)


def import_tensorflow():
    """Return the ``tensorflow`` module, imported quietly the first time (from any thread), with Keras'
    global settings at bneck's (``keras_defaults``)."""
    tensorflow = _import_tensorflow()
    keras_defaults()
    return tensorflow


def keras_defaults() -> None:
    """Set Keras' floatx, image data format and dtype policy back to float32 / channels last when they are
    not (a keras.json saying float16 made rows in float16 that were cached under the float32 key)."""
    import keras

    found = {
        "floatx": keras.config.floatx(),
        "image_data_format": keras.config.image_data_format(),
        "dtype_policy": keras.config.dtype_policy().name,
    }
    changed = {name: value for name, value in found.items() if value != KERAS_DEFAULTS[name]}
    if _ASKED_BACKEND not in (None, "", "tensorflow") and "backend" not in _SAID:
        _SAID.add("backend")
        changed["KERAS_BACKEND"] = _ASKED_BACKEND
    if not changed:
        return
    keras.config.set_floatx(KERAS_DEFAULTS["floatx"])
    keras.config.set_image_data_format(KERAS_DEFAULTS["image_data_format"])
    keras.config.set_dtype_policy(KERAS_DEFAULTS["dtype_policy"])
    import warnings

    from bneck.core.errors import BneckWarning

    said = ", ".join(f"{name} {value} -> {KERAS_DEFAULTS.get(name, 'tensorflow')}" for name, value in changed.items())
    warnings.warn(
        f"bneck computes features in float32, channels last, as its cache keys say; it set Keras' {said} "
        f"for this process (from {os.path.join(os.environ.get('KERAS_HOME', '~/.keras'), 'keras.json')}, or "
        "set by the calling program).",
        BneckWarning,
        stacklevel=3,
    )


def _import_tensorflow():
    with _LOCK:
        if "tensorflow" in sys.modules or os.environ.get("BNECK_TF_LOGS"):
            import tensorflow

            return tensorflow
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        forwarder = threading.Thread(target=_forward, args=(read_fd, saved), daemon=True, name="bneck-tf-quiet")
        forwarder.start()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        try:
            import keras  # noqa: F401  (its first import also talks to the C++ runtime)
            import tensorflow

            # Device discovery (cuInit) prints its own error on GPU-less machines.
            tensorflow.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # closes the pipe's last writer: the forwarder drains it and ends
            forwarder.join(timeout=5)
            os.close(saved)
        return tensorflow
