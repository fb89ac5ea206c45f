"""Inference memory per device: weights by dtype/quantization, KV cache, prefill peak; and the
largest batch / longest context that fit.

KV cache: layers x 2 (K and V) x kv_heads x head_dim x tokens x batch x bytes (Pope et al. 2022,
"Efficiently Scaling Transformer Inference", section 2); fp8 cache = 1 byte per element.
Prefill runs under no_grad: the peak is the weights + cache + the largest layer intermediates
(gated MLP: gate, up and act outputs alive together) or the head (generate() keeps only the last
position's logits, logits_to_keep=1, upcast to fp32). Derived; tested against trace.
"""

from __future__ import annotations

from perfscale.estimate.constants import ModelConstants
from perfscale.estimate.families import EAGER_SOFTMAX_IN_INPUT_DTYPE, GATED_FAMILIES
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.memory import QUANT_BYTES


def weight_bytes(mc: ModelConstants, k: Knobs) -> float:
    """Per-device weights: quantized linear layers, 16/32-bit embeddings and head; TP split."""
    pb = k.prec.weight_bytes
    qb = QUANT_BYTES.get(k.quantization) or pb
    linear = mc.layers * mc.matmul_layer
    rest = mc.params_total - linear
    return (linear * qb + rest * pb) / k.tp


def kv_bytes_per_token(mc: ModelConstants, k: Knobs) -> float:
    """KV cache bytes per token per sequence on one device (kv heads split by TP when they can be)."""
    cb = 1 if k.kv_cache_dtype == "fp8" else k.prec.compute_bytes
    kv_heads = mc.cache_kv_heads or mc.kv_heads
    kv_split = k.tp if kv_heads % k.tp == 0 else 1
    return mc.decoder_layers * 2 * kv_heads * mc.head_dim * cb / kv_split


def prefill_transient(mc: ModelConstants, k: Knobs, batch: int, prompt: int) -> float:
    """Largest intermediates of the prefill forward (one layer at a time under no_grad), per token:
      MLP    the residual, the norm output and the layer input's copy, and the MLP's wide tensors alive
             together (gated: act(gate), up and their product; GELU/ReLU: fc1 output and its activation)
      attention (eager)  q, k, v, k and v repeated to all heads, residual and norm output, and per score
             element the scores, scaled and masked (compute dtype), the fp32 softmax, and the causal mask
             (b x s x s, shared by the heads)
      attention (sdpa)   q, k, v, the output and the residual
    Fitted to trace(--infer) of llama (tiny, b4/b8, prompt 128/256, bf16): exact per token (5,195 B)."""
    cb = k.prec.compute_bytes
    tokens = batch * prompt
    # wide tensors of the MLP alive at once: gated 3; Phi-3's fused gate_up output stays whole (4);
    # GPT-2's gelu_new in Python (x, the x^3 terms, tanh, 1 + tanh, the product: 4.5 fitted to the trace); GELU/ReLU 2
    wide = {"phi3": 4, "gpt2": 4.5}.get(mc.model_type, 3 if mc.model_type in GATED_FAMILIES else 2)
    layer = tokens * (wide * mc.i + 4 * mc.h) * cb / k.tp
    attn = tokens * (2 * mc.q + 2 * mc.kv + mc.h) * cb / k.tp
    if k.attn == "eager":
        heads = mc.heads / k.tp
        # the softmax in fp32, or in the scores' dtype (gpt2, falcon: families.EAGER_SOFTMAX_IN_INPUT_DTYPE)
        per_score = (cb if mc.model_type in EAGER_SOFTMAX_IN_INPUT_DTYPE else 4) + 3 * cb + cb / heads
        attn = tokens * (3 * mc.q + 2 * mc.kv + 2 * mc.h) * cb / k.tp + batch * heads * prompt * prompt * per_score
    head = batch * mc.vocab * (cb + 4 + 4) if mc.has_lm_head else 0.0  # last-position logits, fp32 copy
    return max(layer, attn) + head


def infer_memory(mc: ModelConstants, k: Knobs) -> dict:
    weights = weight_bytes(mc, k)
    per_tok = kv_bytes_per_token(mc, k)
    total_tokens = k.prompt + k.new_tokens
    kv_final = per_tok * total_tokens * k.batch
    kv_prompt = per_tok * (total_tokens if k.cache == "static" else k.prompt) * k.batch
    prefill = weights + kv_prompt + prefill_transient(mc, k, k.batch, k.prompt)
    # Dynamic cache grows by torch.cat: one layer's old and new tensors are alive together.
    decode_trans = (kv_final / mc.decoder_layers if k.cache == "dynamic" else 0.0) + k.batch * mc.vocab * 8
    decode = weights + kv_final + decode_trans
    phase = "prefill" if prefill >= decode else "decode"
    peak = max(prefill, decode)
    return {
        "peak": peak,
        "phase": phase,
        "breakdown": {
            "parameters": weights,
            "gradients": 0.0,
            "optimizer_state": 0.0,
            "activations": 0.0,
            "temporaries": peak - weights - (kv_prompt if phase == "prefill" else kv_final),
            "kv_cache": kv_prompt if phase == "prefill" else kv_final,
            "other": 0.0,
        },
        "kv_per_token": per_tok,
        "weights": weights,
    }


def largest_batch(mc: ModelConstants, k: Knobs, capacity: float) -> int:
    """Largest batch that fits `capacity` bytes at this prompt/new-token length (0 if none)."""
    weights = weight_bytes(mc, k)
    one = infer_memory(mc, k.copy(batch=1))["peak"] - weights
    if one <= 0 or weights + one > capacity:
        return 0
    b = int((capacity - weights) // one)  # memory is linear in batch (eager s^2 included)
    while b > 1 and infer_memory(mc, k.copy(batch=b))["peak"] > capacity:
        b -= 1
    return b


def longest_context(mc: ModelConstants, k: Knobs, capacity: float) -> int:
    """Longest total context (prompt + new tokens) that fits at this batch (0 if none)."""
    def fits(n: int) -> bool:
        return infer_memory(mc, k.copy(prompt=max(1, n - k.new_tokens), new_tokens=min(k.new_tokens, n - 1)))["peak"] <= capacity

    lo, hi = 0, 1
    while fits(hi) and hi < 1 << 26:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
