"""The DeepSpeed ZeRO communication settings perfscale plans for, measures and emits: one place for all three.

ZeRO (RunConfig.zero) means DeepSpeed's ZeRO as the Trainer and accelerate run it. Their `auto` values size the
gradient-reduction bucket by the model's hidden size h (transformers integrations/deepspeed.py
trainer_config_finalize; accelerate Accelerator._prepare_deepspeed): reduce_bucket_size = h^2 elements,
stage3_prefetch_bucket_size = 0.9 h^2, stage3_param_persistence_threshold = 10 h. DeepSpeed allocates the
reduction bucket whole, whatever the model's size (DeepSpeed 0.19 runtime/zero/stage_1_and_2.py setup_buckets:
torch.empty(reduce_bucket_size) per gradient dtype, a second one with overlap_comm to double-buffer; stage3.py: one
per dtype at init). Its own default, 5e8 elements, is 2 GB of fp32 buffers on a model of any size (measured here:
benchmarks/LOG.md 2026-12-02, a 7M-parameter model's ZeRO-2 rank held 2.10e9 live bytes); `auto` scales with h.
"""

from __future__ import annotations

# The zero_optimization keys the emitted config and the bench's DeepSpeedPlugin share. `auto` is filled from
# model.config.hidden_size by the Trainer and by accelerate (not by a bare deepspeed.initialize).
ZERO_COMMUNICATION: dict[str, object] = {
    "overlap_comm": True,  # reduce a bucket while backward fills the next (two buffers under ZeRO-1/2)
    "contiguous_gradients": True,  # copy gradients into the bucket as they are produced (no fragmentation)
    "reduce_bucket_size": "auto",
}
ZERO3_COMMUNICATION: dict[str, object] = {
    "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto",
}


def zero_communication(stage: int) -> dict[str, object]:
    """The zero_optimization entries above for a ZeRO stage (the stage-3 ones only at stage 3)."""
    return dict(ZERO_COMMUNICATION) | (dict(ZERO3_COMMUNICATION) if stage == 3 else {})


def reduce_bucket_elements(hidden_size: int) -> int:
    """reduce_bucket_size as `auto` resolves it: h^2."""
    return hidden_size * hidden_size


def bucket_bytes(stage: int, hidden_size: int, grad_bytes: float) -> float:
    """Device bytes of ZeRO's gradient-reduction buckets (0 without ZeRO): two h^2 buckets in the gradient dtype
    under ZeRO-1/2 with overlap_comm, one under ZeRO-3 (its flat buffer, allocated once)."""
    if stage <= 0:
        return 0.0
    buffers = 2 if (stage in (1, 2) and ZERO_COMMUNICATION["overlap_comm"]) else 1
    return buffers * reduce_bucket_elements(hidden_size) * grad_bytes


__all__ = ["ZERO3_COMMUNICATION", "ZERO_COMMUNICATION", "bucket_bytes", "reduce_bucket_elements", "zero_communication"]
