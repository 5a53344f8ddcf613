#!/usr/bin/env bash
# Reproduces the bundled default model (sample_data/default_model.pt) with the project's own
# training command, on the training crops of sample_data/train/ only (sample_data/eval/ is held
# out for benchmarks/baseline_otsu_watershed.py). Usage: bash benchmarks/train_default_model.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-src/napari_tiled_unet/sample_data/default_model.pt}
D=sample_data/train
args=()
for i in 00 02 04 06 08 10; do args+=(--image "$D/img_$i.tif" --labels "$D/img_${i}_labels.tif"); done
napari-tiled-unet train "${args[@]}" --output "$OUT" --mode instance \
    --iterations 800 --tile 256 --batch 4 --base-channels 16 --depth 4 \
    --validate-every 100 --seed 0 --device cpu
