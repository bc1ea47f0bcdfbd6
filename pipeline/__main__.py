"""``python -m pipeline`` is the ``bneck`` command."""
import sys

from .cli import main

sys.exit(main())
