#!/usr/bin/env bash
# Reproduces the bundled default model (sample_data/default_model.pt), or makes the same kind of
# model from another training set.
#
# Usage: bash benchmarks/train_default_model.sh [OUT]
#          The bundled model's recipe: the HeLa crops of sample_data/train/, the CHO planes of
#          sample_data/sources/cho/ and 16 generated images (training.synthetic), each source
#          repeated to about the same area, appearance and 0.5-2x scale augmentation, 1200 steps
#          of 4 tiles of 256 px, base 16, depth 4, seed 0, CPU. sample_data/eval/ and the DSB
#          2018 image are never trained on (benchmarks/crossdomain_eval.py scores them).
#          OUT: model file to write (default: src/napari_tiled_unet/sample_data/default_model.pt).
#        bash benchmarks/train_default_model.sh OUT FOLDER [TRAIN OPTIONS...]
#          The same network, augmentation and budget trained with the project's own training
#          command on FOLDER: any folder of NAME.tif images with NAME_labels.tif instance masks
#          (one id per object) beside them, e.g. where the bundled HeLa crops may not be
#          redistributed. TRAIN OPTIONS are appended to the command and override the defaults
#          below (the last occurrence of an option wins), e.g. --iterations 100 --device cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-src/napari_tiled_unet/sample_data/default_model.pt}
if [ $# -lt 2 ]; then
    exec python benchmarks/crossdomain_eval.py --no-folds --no-bundled --default-model "$OUT" \
        --iterations 1200 --tile 256 --batch 4 --base 16 --synthetic-train 16
fi
D=$2
shift 2
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
    --iterations 1200 --tile 256 --batch 4 --base-channels 16 --depth 4 \
    --augment-appearance --augment-scale 2 --validate-every 100 --seed 0 --device cpu "$@"
