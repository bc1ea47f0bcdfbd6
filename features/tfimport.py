"""Import TensorFlow without the C++ start-up chatter.

The CUDA-enabled TensorFlow wheel prints CUDA-stub and absl lines to the process's
stderr on machines without a GPU. They are silenced for the duration of the import
only (set ``BNECK_TF_LOGS=1`` to see them); Python errors still propagate.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow():
    """Return the ``tensorflow`` module, imported quietly the first time."""
    if "tensorflow" in sys.modules or os.environ.get("BNECK_TF_LOGS"):
        import tensorflow
        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow
                import keras  # noqa: F401  (its first import also talks to the C++ runtime)
                # Device discovery (cuInit) prints its own error on GPU-less machines.
                tensorflow.config.list_physical_devices()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    return tensorflow
