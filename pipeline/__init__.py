"""bneck stages 2 and 3, the whole run, and the command line. Imports ``features``; never the reverse.

Public API (the command line is a thin layer over it)::

    from features import extract
    from pipeline import train, finetune, run
"""
from .finetune import FinetuneResult, finetune
from .run import RunResult, run
from .train import Leaderboard, train

__all__ = ["FinetuneResult", "Leaderboard", "RunResult", "finetune", "run", "train"]
