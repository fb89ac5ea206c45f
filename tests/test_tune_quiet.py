"""A quiet terminal: while a tune verb works, what third-party code writes to stderr (warnings, progress
bars, C++ logging, child processes) is captured and summarised in one note; perfscale's own lines still
reach the terminal. (The real runs: test_tune_train's resumed `tune` and test_tune_infer's `tune encoder
--quick` assert an empty stderr in --json mode.)"""

from __future__ import annotations

import json
import subprocess
import sys


CHATTY = r"""
import subprocess, sys, warnings
from perfscale.report.quiet import captured_stderr
with captured_stderr() as cap:
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
    sys.stderr.write("Loading weights:  50%|#####     | 51/103 [00:00<00:00, 5802.50it/s]\rLoading weights: 100%|##########| 103/103\n")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('W1202 torchvision is not installed. Skipping torchvision::nms\\n')"])
    import os; os.write(2, b"[torch.onnx] Run decompositions...\n")
    cap.terminal.write("perfscale: working\n")
print(json.dumps({"lines": cap.lines, "summary": cap.summary()}))
"""


def test_third_party_stderr_is_captured_and_summarised_ours_is_not():
    proc = subprocess.run([sys.executable, "-c", "import json\n" + CHATTY], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "perfscale: working\n"  # only perfscale's own line reached the terminal
    out = json.loads(proc.stdout)
    text = "\n".join(out["lines"])
    for fragment in ("FutureWarning", "Loading weights", "torchvision is not installed", "[torch.onnx]"):
        assert fragment in text, fragment
    summary = out["summary"]
    assert summary.startswith("third-party output captured and not shown: ") and "FutureWarning" in summary
    assert "2 progress-bar lines" in summary and "--verbose" in summary


def test_verbose_and_failures_show_the_output():
    script = ("import sys\nfrom perfscale.report.quiet import captured_stderr\n"
              "with captured_stderr(verbose=True):\n    sys.stderr.write('shown as it comes\\n')\n"
              "try:\n    with captured_stderr():\n        sys.stderr.write('what the library said\\n')\n        raise RuntimeError('bug')\n"
              "except RuntimeError:\n    pass\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("shown as it comes\n")
    assert "third-party output before the error" in proc.stderr and "what the library said" in proc.stderr
