"""Benchmark scenarios, one module each; `SCENARIO_MODULES` is the explicit map the worker uses."""

SCENARIO_MODULES = {
    "train": "perfscale.measure.scenarios.train",
    "encode": "perfscale.measure.scenarios.encode",
    "generate": "perfscale.measure.scenarios.generate",
    "load": "perfscale.measure.scenarios.load",
    "selftest": "perfscale.measure.scenarios.selftest",
}
