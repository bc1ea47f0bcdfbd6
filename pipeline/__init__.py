"""bneck stages 2 and 3, the whole run, and the command line (``bneck.pipeline``).

Imports ``bneck.features``; never the reverse.

Public API (the command line is a thin layer over it)::

    from bneck import extract, train, finetune, run
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("bneck")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"

from bneck.pipeline.finetuning.stage import FinetuneResult, finetune
from bneck.pipeline.runner.compose import RunResult, run
from bneck.pipeline.training.leaderboard import Leaderboard
from bneck.pipeline.training.stage import train

__all__ = ["__version__", "FinetuneResult", "Leaderboard", "RunResult", "finetune", "run", "train"]
