"""The specs layer: what model, on what hardware, running what workload."""

from perfscale.specs.hardware import Hardware, Topology
from perfscale.specs.lookup import get_hardware, parse_topology
from perfscale.specs.model import ModelSpec, load_model_spec, spec_from_config
from perfscale.specs.workload import InferWorkload, TrainWorkload, Workload

__all__ = [
    "Hardware",
    "InferWorkload",
    "ModelSpec",
    "Topology",
    "TrainWorkload",
    "Workload",
    "get_hardware",
    "load_model_spec",
    "parse_topology",
    "spec_from_config",
]
