#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job — extract
# bottleneck features of the reference cats-vs-dogs split with MobileNet (alpha 0.25)
# and real ImageNet weights, once; a second run reuses every row.
#   bash scripts/quickstart.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${1:-../shared/data/cats_and_dogs_small}
OUT=${2:-runs/quickstart/features}
export KERAS_HOME=${KERAS_HOME:-$PWD/.keras_home}
.venv/bin/bneck extract "$DATA" --out "$OUT" --backbone mobilenet --alpha 0.25 --size 224 \
  --weights imagenet
