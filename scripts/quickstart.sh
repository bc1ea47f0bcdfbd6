#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job, `bneck demo`, on
# the reference cats-vs-dogs split here: MobileNet (alpha 0.25) features with the real
# ImageNet weights from ../shared/data, a leaderboard of classifiers, the best Keras
# head fine-tuned, and report.html. Online, plain `bneck demo` downloads the data and
# VGG16 weights itself.
#   bash scripts/quickstart.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA=${1:-../shared/data/cats_and_dogs_small}
OUT=${2:-runs/demo}
.venv/bin/bneck demo --data "$DATA" --out "$OUT" --backbone mobilenet --alpha 0.25 --size 224 \
  --weights imagenet
echo "quickstart: done. Put bneck on your PATH with: source .venv/bin/activate   (then: bneck --help)"
