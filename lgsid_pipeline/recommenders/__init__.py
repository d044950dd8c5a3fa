"""Downstream CTR recommenders (DIN, DIEN, SIM, TWIN, ETA) over semantic-ID features."""

from lgsid_pipeline.lazy import lazy_exports

_EXPORTS = {
    "CtrConfig": "config",
    "TrainConfig": "config",
    "CtrBatch": "blocks",
    "batch_from_numpy": "blocks",
    "CtrModel": "discriminative",
    "TrainResult": "training",
    "evaluate_ctr": "training",
    "load_ctr_model": "training",
    "predict_ctr": "training",
    "save_ctr_model": "training",
    "train_ctr": "training",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
