#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job on the reference
# cats-vs-dogs split — extract MobileNet (alpha 0.25) bottleneck features with real
# ImageNet weights once, then train and rank classifiers on them.
#   bash scripts/quickstart.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${1:-../shared/data/cats_and_dogs_small}
OUT=${2:-runs/quickstart}
export KERAS_HOME=${KERAS_HOME:-$PWD/.keras_home}
.venv/bin/bneck extract "$DATA" --out "$OUT/features" --backbone mobilenet --alpha 0.25 \
  --size 224 --weights imagenet
.venv/bin/bneck train "$OUT/features" --classifier dense,logreg,svm,knn --out "$OUT/models"
