"""``python -m bneck`` is the ``bneck`` command."""

import sys

from bneck.pipeline.cli import main

sys.exit(main())
