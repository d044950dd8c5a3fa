"""Downstream CTR recommenders (DIN, DIEN, SIM, TWIN, ETA) over semantic-ID features."""

from lgsid_pipeline.recommenders.blocks import CtrBatch, batch_from_numpy
from lgsid_pipeline.recommenders.discriminative import BACKBONES, CtrConfig, CtrModel
from lgsid_pipeline.recommenders.training import (
    TrainConfig,
    TrainResult,
    evaluate_ctr,
    load_ctr_model,
    predict_ctr,
    save_ctr_model,
    train_ctr,
)

__all__ = [
    "BACKBONES",
    "CtrBatch",
    "CtrConfig",
    "CtrModel",
    "TrainConfig",
    "TrainResult",
    "batch_from_numpy",
    "evaluate_ctr",
    "load_ctr_model",
    "predict_ctr",
    "save_ctr_model",
    "train_ctr",
]
