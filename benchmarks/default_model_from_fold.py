"""The bundled default model from the DSB-2018-left-out fold of a cross-domain run.

That fold is the default recipe (``crossdomain_eval.train_model`` on every source but DSB 2018,
:func:`crossdomain_eval.train_default_model`); its object sizes are recorded as this version's
training records them (weights unchanged) and the sources it saw are noted.

Usage: python benchmarks/default_model_from_fold.py FOLDS/without_DSB2018.pt OUT.pt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crossdomain_eval import RESERVED, balanced, load_sources, record_default_model

from napari_tiled_unet import load_model
from napari_tiled_unet.object_size import training_object_stats


def main(fold_model: str, out: str) -> None:
    model = load_model(fold_model)
    sources = [s for s in load_sources(False, 16) if s.name != RESERVED]
    _, labels = balanced(sources)
    scale = model.info.training["config"]["augment"]["scale"]
    stats = training_object_stats(labels, 2, scale)
    if (stats["object_diameter"], stats["min_object_size"]) != (
        model.info.object_diameter,
        model.info.min_object_size,
    ):
        raise SystemExit(f"{fold_model} was not trained on the default sources: {stats}")
    model.info = model.info.replace(**stats)
    record_default_model(model, sources, Path(out))
    print(stats)


if __name__ == "__main__":
    main(*sys.argv[1:3])
