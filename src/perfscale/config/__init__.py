"""The config layer: RunConfig, every knob validated with the valid choices in each error."""

from perfscale.config.optimizer import DEFAULT_OPTIMIZER, OPTIMIZERS, build_optimizer, canonical_optimizer
from perfscale.config.precision import INFER_PRECISIONS, PRECISIONS, TRAIN_PRECISIONS, Precision
from perfscale.config.run_config import RunConfig, parse_targets

__all__ = [
    "DEFAULT_OPTIMIZER", "INFER_PRECISIONS", "OPTIMIZERS", "PRECISIONS", "TRAIN_PRECISIONS", "Precision", "RunConfig",
    "build_optimizer", "canonical_optimizer", "parse_targets",
]
