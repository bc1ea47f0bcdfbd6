#!/usr/bin/env bash
# Create .venv with bneck and its test tools, and add the ImageNet weights files found in
# ../shared/data/weights to bneck's weights folder (`bneck weights add`: ~/.local/share/bneck/weights,
# or $BNECK_WEIGHTS), so that `--weights imagenet` finds them offline from any folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,docs,openvino,ray,export]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import bneck.features, bneck.pipeline, tensorflow" >/dev/null 2>&1 \
  || { echo "setup: the installation in .venv is not importable" >&2; exit 1; }
if [ -d ../shared/data/weights ]; then
  .venv/bin/bneck weights add ../shared/data/weights | tail -1 | sed 's/^/setup: weights: /'
fi
echo "setup: .venv ready. Put bneck on your PATH with: source .venv/bin/activate"
