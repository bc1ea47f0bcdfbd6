#!/usr/bin/env bash
# Create .venv with bneck and its test tools, and link the ImageNet weights files found in
# ../shared/data/weights into .keras_home/models under their official names, so that
# `--weights imagenet` resolves offline with KERAS_HOME=.keras_home.
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
mkdir -p .keras_home/models
shopt -s nullglob
for weights in ../shared/data/weights/*.h5; do
  ln -sf "$(realpath "$weights")" ".keras_home/models/$(basename "$weights")"
done
echo "setup: .venv ready; weights linked in .keras_home/models: $(ls .keras_home/models | tr '\n' ' ')"
