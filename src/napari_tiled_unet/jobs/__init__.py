"""The job layer: prediction and training requests, planned and run for every face.

The command line, the napari widgets and a dask task build a request, run its generator and
present the result; the rules between a request and the engine live here only.
"""

from napari_tiled_unet.jobs.paths import (
    PredictJob,
    PredictPlan,
    check_input_file,
    check_job_paths,
    check_training_paths,
    plan_predict,
)
from napari_tiled_unet.jobs.predict import (
    OUTPUT_KINDS,
    LayoutHints,
    PredictRequest,
    PredictResult,
    iter_predict_job,
    load_job_model,
    predict_job,
    read_layout,
    read_spec,
)
from napari_tiled_unet.jobs.train import (
    TILE_3D,
    TrainImage,
    TrainPlan,
    TrainRequest,
    open_training_pair,
    plan_training,
    read_training_layout,
    training_tile,
)

__all__ = [
    "OUTPUT_KINDS",
    "TILE_3D",
    "LayoutHints",
    "PredictJob",
    "PredictPlan",
    "PredictRequest",
    "PredictResult",
    "TrainImage",
    "TrainPlan",
    "TrainRequest",
    "check_input_file",
    "check_job_paths",
    "check_training_paths",
    "iter_predict_job",
    "load_job_model",
    "open_training_pair",
    "plan_predict",
    "plan_training",
    "predict_job",
    "read_layout",
    "read_spec",
    "read_training_layout",
    "training_tile",
]
