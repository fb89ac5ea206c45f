"""The config layer: RunConfig, every knob validated with the valid choices in each error."""

from perfscale.config.run_config import RunConfig, parse_targets

__all__ = ["RunConfig", "parse_targets"]
