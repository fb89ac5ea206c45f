"""The emit layer: a tuned RunConfig written in the formats people already run.

TrainingArguments kwargs (JSON + Python snippet), an accelerate config YAML, a DeepSpeed JSON,
FSDP settings and a torchrun command line. Each is loaded by the real library in the tests.
"""

from perfscale.export.emit import FORMATS, EmittedFile, emit_files

__all__ = ["FORMATS", "EmittedFile", "emit_files"]
