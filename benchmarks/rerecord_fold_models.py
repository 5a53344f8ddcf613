"""Record the object sizes of cross-domain fold models as this version's training records them.

``crossdomain_eval.py --save-models FOLDS`` writes ``FOLDS/without_NAME.pt``. Models trained
before training stored ``object_diameter_range`` (scale augmentation) lack it; this writes each
one again into ``OUT`` with the sizes recomputed from the fold's training labels (weights
unchanged; the stored median and minimum must match, or the file is not that fold's). The
DSB-2018-left-out fold is the default recipe (:func:`crossdomain_eval.train_default_model`:
every source but DSB 2018), so it is also written as ``OUT/default_model.pt`` with the note of
the sources it saw: the bundled default model.

Usage: python benchmarks/rerecord_fold_models.py FOLDS OUT
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossdomain_eval import RESERVED, balanced, load_sources, record_default_model

from napari_tiled_unet import load_model, save_model
from napari_tiled_unet.object_size import training_object_stats


def main(folds: str, out: str) -> None:
    sources = load_sources(False, 16)
    Path(out).mkdir(parents=True, exist_ok=True)
    for held in sources:
        path = Path(folds) / f"without_{held.name}.pt"
        if not path.exists():
            continue
        model = load_model(path)
        rest = [s for s in sources if s is not held]
        validated = model.info.training.get("validation") == "held-out images"
        _, labels, _ = balanced(rest, validate=validated)
        stats = training_object_stats(labels, 2, model.info.training["config"]["augment"]["scale"])
        stored = (model.info.object_diameter, model.info.min_object_size)
        if (stats["object_diameter"], stats["min_object_size"]) != stored:
            raise SystemExit(f"{path} was not trained on every source but {held.name}: {stats}")
        model.info = model.info.replace(**stats)
        save_model(model, Path(out) / path.name)
        if held.name == RESERVED:
            record_default_model(model, rest, Path(out) / "default_model.pt")
        print(path.name, stats)


if __name__ == "__main__":
    main(*sys.argv[1:3])
