"""bneck stages 2 and 3, the whole run, and the command line. Imports ``features``; never the reverse.

Public API (the command line is a thin layer over it)::

    from features import extract
    from pipeline import train, finetune, run
"""
from .finetuning.stage import FinetuneResult, finetune
from .runner.compose import RunResult, run
from .training.leaderboard import Leaderboard
from .training.stage import train

__all__ = ["FinetuneResult", "Leaderboard", "RunResult", "finetune", "run", "train"]
