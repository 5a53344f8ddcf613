#!/usr/bin/env bash
# Reproduces the bundled default model (sample_data/default_model.pt) with the project's own
# training command, on the training crops of sample_data/train/ only (sample_data/eval/ is held
# out for benchmarks/baseline_otsu_watershed.py).
#
# Usage: bash benchmarks/train_default_model.sh [OUT] [FOLDER] [TRAIN OPTIONS...]
#   OUT     model file to write (default: src/napari_tiled_unet/sample_data/default_model.pt)
#   FOLDER  any folder of NAME.tif images with NAME_labels.tif instance masks (one id per
#           object) beside them (default: sample_data/train). Another training set makes the
#           same kind of model, e.g. where the bundled HeLa crops may not be redistributed.
#   TRAIN OPTIONS are appended to the command and override the defaults below (the last
#           occurrence of an option wins), e.g. --iterations 100 --device cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-src/napari_tiled_unet/sample_data/default_model.pt}
D=${2:-sample_data/train}
shift $(($# < 2 ? $# : 2))
args=()
for labels in "$D"/*_labels.tif; do
    [ -e "$labels" ] || break
    image=${labels%_labels.tif}.tif
    [ -e "$image" ] || { echo "train_default_model.sh: $labels has no image $image" >&2; exit 2; }
    args+=(--image "$image" --labels "$labels")
done
if [ ${#args[@]} -eq 0 ]; then
    echo "train_default_model.sh: no NAME.tif + NAME_labels.tif pairs in $D" >&2
    exit 2
fi
napari-tiled-unet train "${args[@]}" --output "$OUT" --mode instance \
    --iterations 800 --tile 256 --batch 4 --base-channels 16 --depth 4 \
    --validate-every 100 --seed 0 --device cpu "$@"
