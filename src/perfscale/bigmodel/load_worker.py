"""One from_pretrained in this (fresh) process: `python -m perfscale.bigmodel.load_worker '<json>'`.

Prints one JSON line: import seconds (torch, transformers), load seconds, and resident memory:
the RSS just before from_pretrained, its peak during the call (sampled every millisecond on a
thread, and getrusage's ru_maxrss), and the RSS once every parameter has been read (safetensors
weights are memory-mapped: from_pretrained may return before their pages are resident; a first
forward brings them in, so that is what a run holds). Device memory
(torch.cuda.max_memory_allocated) on a GPU. Nothing but the JSON line goes to stdout.
"""

from __future__ import annotations

import json
import sys
import time

from perfscale.bigmodel.rss import PeakRss, max_rss_bytes


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    start = time.perf_counter()
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cls = getattr(transformers, spec["class"], None) or transformers.AutoModel
    kwargs = dict(spec.get("kwargs") or {})
    if "dtype" in kwargs and kwargs["dtype"] != "auto":
        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    if "max_memory" in kwargs:  # JSON made the GPU indices strings; accelerate wants ints
        kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in kwargs["max_memory"].items()}
    import_s = time.perf_counter() - start
    with PeakRss(interval=0.001) as peak:
        t0 = time.perf_counter()
        model = cls.from_pretrained(spec["path"], **kwargs)
        load_s = time.perf_counter() - t0
    maxrss = max_rss_bytes()
    with torch.no_grad():
        params = 0
        for p in model.parameters():
            if p.device.type != "meta":
                p.float().sum()  # touch every page of every resident parameter
            params += p.numel()
    import psutil

    resident = psutil.Process().memory_info().rss
    device_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    devices = sorted({str(v) for v in (getattr(model, "hf_device_map", None) or {}).values()})
    out = {"import_s": import_s, "load_s": load_s, "rss_before_bytes": peak.start, "rss_peak_bytes": peak.peak,
           "ru_maxrss_bytes": maxrss, "rss_resident_bytes": resident,
           "params": params, "device_peak_bytes": device_peak, "devices": devices,
           "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
