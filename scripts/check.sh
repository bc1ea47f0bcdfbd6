#!/usr/bin/env bash
# Lint, format and type check: the same commands .ci/run runs.
#   bash scripts/check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check bneck features pipeline tests scripts setup.py
.venv/bin/ruff format --check bneck features pipeline tests scripts setup.py
# mypy cannot follow the editable install's mapping: give it the installed layout as links.
typed=build/typecheck
rm -rf "$typed" && mkdir -p "$typed/bneck"
for entry in bneck/*; do ln -s "$PWD/$entry" "$typed/bneck/$(basename "$entry")"; done
ln -s "$PWD/features" "$typed/bneck/features"
ln -s "$PWD/pipeline" "$typed/bneck/pipeline"
# The public API: `import bneck` and every stage function it hands out.
MYPYPATH="$typed" .venv/bin/mypy --config-file pyproject.toml \
  -p bneck.core \
  -m bneck -m bneck.features.extraction.stage -m bneck.features.featurefile.format \
  -m bneck.pipeline.training.stage -m bneck.pipeline.finetuning.stage -m bneck.pipeline.runner.compose \
  -m bneck.pipeline.predict -m bneck.pipeline.export
