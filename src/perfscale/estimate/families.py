"""What one transformer layer of each family keeps for backward, and its linear layers.

Activation recipes count the tensors autograd saves per token per layer, by dtype class:
  f32     always 4 bytes (norm statistics, softmax/log-softmax outputs, SDPA logsumexp)
  stream  the residual stream's dtype: the parameter dtype (fp32 under autocast "-mixed")
  compute the matmul dtype: 2 bytes under bf16/fp16 and "-mixed" (autocast), else 4
  mask    1 byte (dropout masks, used by the Megatron reference layer)
  autocast  2 bytes only under torch autocast with an fp32 stream ("-mixed"), else 0: autocast
          casts a non-leaf input separately for each linear that reads it (the cast cache holds
          only leaf tensors, i.e. weights), so q/k/v each save their own 16-bit copy of the input
Units: h hidden, q = heads x head_dim, kv = kv_heads x head_dim, i intermediate, heads, one,
hs = heads x sequence (attention scores per token). Under tensor parallelism the units q, kv, i,
heads, hs are split across ranks; h and one are replicated unless sequence parallelism is on
(Korthikanti et al. 2022, section 4.2).
Source: derived by listing autograd's saved tensors (torch.autograd.graph.saved_tensors_hooks,
deduplicated by storage) of the transformers 5.x layer code for each family; tested against trace.
Families not listed use the `llama` recipe (pre-RMSNorm, separate q/k/v, gated MLP).
"""

from __future__ import annotations

# RMSNorm (Llama-style): the fp32 upcast input, rsqrt, the normalised input, and the weighted output
# that the next linear saves. Source: LlamaRMSNorm.forward (upcast to fp32, rsqrt, cast back).
_RMS = (("f32", "h", 1), ("f32", "one", 1), ("stream", "h", 1), ("compute", "h", 1))
# nn.LayerNorm (aten native_layer_norm saves input, mean, rstd) + the output the next linear saves.
_LN = (("stream", "h", 1), ("f32", "one", 2), ("compute", "h", 1))
# Fused SDPA (flash / memory-efficient, CPU flash): q, k, v, the output, logsumexp.
_SDPA = (("compute", "q", 2), ("compute", "kv", 2), ("f32", "heads", 1))
# The contiguous (b, s, heads x head_dim) copy of the attention output that the output projection
# saves (transpose(1, 2).reshape after the kernel, in every family's attention forward).
_OUT_COPY = (("compute", "q", 1),)
_ATTN = _SDPA + _OUT_COPY
# Fused qkv projection (Phi-3): q and k are new tensors after RoPE, but v stays a view of the qkv
# output, which keeps all of it (q + 2 kv) alive.
_ATTN_FUSED_QKV = (("compute", "q", 4), ("compute", "kv", 3), ("f32", "heads", 1))
# Gated MLP (SwiGLU): gate output, act output, up output, product (= down_proj input).
_GATED = (("compute", "i", 4),)

RECIPES: dict[str, tuple[tuple[str, str, float], ...]] = {
    # extra autocast copies: q/k/v read one norm output (2 extra), gate/up another (1 extra)
    "llama": _RMS + _ATTN + _RMS + _GATED + (("autocast", "h", 3),),
    "phi3": _RMS + _ATTN_FUSED_QKV + _RMS + _GATED,
    # GPT-NeoX: parallel residual (both LayerNorms read the same input), fused qkv with partial RoPE
    # (q, k new after RoPE, v a view keeping the whole qkv output, output + its copy: 7 q, no GQA),
    # GELU: fc1 output + fc2 input.
    "gpt_neox": _LN + (("f32", "one", 2), ("compute", "h", 1)) + (("compute", "q", 7), ("f32", "heads", 1))
    + (("compute", "i", 2),),
    # OPT: pre-LN, separate q/k/v, ReLU saves its output (= fc2 input).
    "opt": _LN + _ATTN + _LN + (("compute", "i", 1), ("autocast", "h", 2)),
    # Falcon (new decoder architecture): parallel attention, ln_attn + ln_mlp on one input, k/v
    # expanded to all heads, GELU MLP.
    "falcon": _LN + (("f32", "one", 2), ("compute", "h", 1)) + (("compute", "q", 5), ("f32", "heads", 1))
    + (("compute", "i", 2),),
    # GPT-2: Conv1D c_attn output kept whole (3h: q, k, v are views), the output and its copy;
    # "gelu_new" in Python keeps five i-wide tensors (x, 0.5x, tanh, 1 + tanh, the product = c_proj
    # input). CUDA autocast runs pow in fp32, so under "-mixed" three of them are fp32.
    "gpt2": _LN + (("compute", "q", 5), ("f32", "heads", 1)) + _LN + (("compute", "i", 2), ("amp_f32", "i", 3)),
    # BERT / RoBERTa: post-LN, each LayerNorm's output read by the next linear (the embedding
    # LayerNorm's, like a final norm, counted once per token); separate q/k/v (2 extra autocast
    # copies), erf GELU keeps its input and output.
    "bert": _ATTN + _LN + (("compute", "i", 2), ("autocast", "h", 2)) + _LN,
}
RECIPES["roberta"] = RECIPES["bert"]
# Post-LN families: no norm reads the embeddings inside a layer and none precedes the head.
POST_NORM_FAMILIES = ("bert", "roberta")
RECIPES["mistral"] = RECIPES["qwen2"] = RECIPES["llama"]
# Gemma 2: Gemma2RMSNorm computes in fp32 (x.float(), rsqrt, the normalised x that multiplies
# 1 + weight) and casts back; four norms per layer, the two post-norms' outputs go into the residual
# (read by no linear). Source: modeling_gemma2.py (Gemma2RMSNorm, Gemma2DecoderLayer); tested against trace.
_GEMMA_NORM = (("f32", "h", 2), ("f32", "one", 1))
RECIPES["gemma2"] = (_GEMMA_NORM + (("compute", "h", 1),) + _ATTN + _GEMMA_NORM + _GEMMA_NORM + (("compute", "h", 1),)
                     + _GATED + _GEMMA_NORM + (("autocast", "h", 3),))
RECIPES["mixtral"] = RECIPES["llama"]

# Fused kernels (RunConfig.fused_kernels): what training stacks with fused RMSNorm and
# SwiGLU keep instead of the eager transformers modules above.
#  RMSNorm: the input in its own dtype + fp32 rstd per token (Liger-Kernel LigerRMSNormFunction
#    saves X, W, RSTD; TransformerEngine / Apex fused RMSNorm likewise), and the output the next
#    linear saves; no fp32 upcast copies.
#  SwiGLU: gate and up outputs only, silu recomputed in backward (LigerSiLUMulFunction saves a, b;
#    Megatron-LM bias_swiglu saves the fc1 output), plus the product that down_proj saves.
# Families without RMSNorm / gated MLP keep their recipe (nn.LayerNorm is already one fused op).
# The LM head and loss stay as modelled for transformers (Liger's fused linear cross-entropy is
# not modelled: an over-estimate on the last pipeline stage / single device).
_RMS_FUSED = (("stream", "h", 1), ("f32", "one", 1), ("compute", "h", 1))
_GATED_FUSED = (("compute", "i", 3),)
FUSED_RECIPES: dict[str, tuple[tuple[str, str, float], ...]] = {
    "llama": _RMS_FUSED + _ATTN + _RMS_FUSED + _GATED_FUSED + (("autocast", "h", 3),),
    "phi3": _RMS_FUSED + _ATTN_FUSED_QKV + _RMS_FUSED + _GATED_FUSED,
}
for _name in ("mistral", "qwen2", "mixtral"):
    FUSED_RECIPES[_name] = FUSED_RECIPES["llama"]

# The GPT layer of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
# Transformer Models", section 4.1), 16-bit activations and 1-byte dropout masks: the reference
# the engine's TP / SP / selective-recomputation arithmetic is tested against.
MEGATRON_GPT = (
    ("compute", "h", 1), ("compute", "q", 2), ("compute", "hs", 1), ("mask", "hs", 1),  # QKV in, Q K, softmax, mask
    ("compute", "hs", 1), ("compute", "q", 1), ("compute", "q", 1), ("mask", "h", 1),  # dropout out, V, proj in, mask
    ("compute", "h", 1), ("compute", "i", 2), ("mask", "h", 1),  # MLP in, GeLU in + out (i = 4h), mask
    ("compute", "h", 2),  # two LayerNorm inputs
)

GATED_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3")

# The attention core each recipe saves under SDPA (replaced by EAGER under attn="eager").
# Default: _ATTN.
SDPA_CORE = {
    "phi3": _ATTN_FUSED_QKV,
    "gpt_neox": (("compute", "q", 7), ("f32", "heads", 1)),
    "falcon": (("compute", "q", 5), ("f32", "heads", 1)),
    "gpt2": (("compute", "q", 5), ("f32", "heads", 1)),
}

# Eager attention replaces SDPA's saved set: q, k and v repeated to all heads, the fp32 softmax
# output (heads x s per token), its cast to the compute dtype when that is 16-bit, and the
# contiguous output copy for o_proj. Source: eager_attention_forward in modeling_llama.py.
EAGER = (("compute", "q", 4),)
EAGER_SCORES_F32 = 1.0  # x heads x s, always fp32 (softmax in fp32)
EAGER_SCORES_COMPUTE = 1.0  # x heads x s, only when compute is 16-bit (the .to(query.dtype) copy)
# Families whose eager softmax runs in the scores' dtype instead of softmax(..., dtype=float32):
# CUDA autocast still promotes it to fp32 (and the probabilities are cast back), but pure 16-bit
# training keeps one 16-bit probability tensor, shared by softmax and the matmul with V.
# Source: eager_attention_forward (gpt2, bert, t5) and FalconAttention.forward; tested against trace.
EAGER_SOFTMAX_IN_INPUT_DTYPE = ("gpt2", "falcon", "bert", "roberta", "t5")
# Attention logit soft-capping (Gemma 2, config attn_logit_softcapping): eager computes
# tanh(scores / cap) * cap, and tanh keeps its output (heads x s per token, the scores' dtype) for
# backward. Source: eager_attention_forward in modeling_gemma2.py. (SDPA cannot soft-cap.)
EAGER_SOFTCAP = (("compute", "hs", 1),)

# Dropout sites in training (transformers 5.x modeling code): (config key, where, count) with
#   layer  a residual branch's output per layer (an h-wide linear output, compute dtype),
#   embed  the embedding output, once per token (stream dtype),
#   probs  the attention probabilities (eager attention; CUDA's flash / memory-efficient SDPA
#          kernels keep an RNG state instead of a mask, CPU SDPA falls back to the math kernel),
#   mlp    the MLP's i-wide activation before its output projection (T5; "mlp_gated" after a gated product).
# On CUDA each site keeps a 1-byte bool mask (fused native_dropout); on CPU the noise tensor in
# the input's dtype (aten/src/ATen/native/Dropout.cpp). A site whose probability is 0 costs nothing.
DROPOUT_SITES: dict[str, tuple[tuple[str, str, int], ...]] = {
    "gpt2": (("resid_pdrop", "layer", 2), ("embd_pdrop", "embed", 1), ("attn_pdrop", "probs", 1)),
    "opt": (("dropout", "layer", 2), ("attention_dropout", "probs", 1)),
    "phi3": (("resid_pdrop", "layer", 2), ("attention_dropout", "probs", 1)),
    "gpt_neox": (("hidden_dropout", "layer", 2), ("hidden_dropout", "embed", 1), ("attention_dropout", "probs", 1)),
    # new decoder architecture / parallel attention: one dropout on attention + MLP output (the
    # sequential variant also drops the attention output with attention_dropout; alibi drops probs)
    "falcon": (("hidden_dropout", "layer", 1),),
}
for _name in ("llama", "mistral", "qwen2", "gemma2", "mixtral"):
    DROPOUT_SITES[_name] = (("attention_dropout", "probs", 1),)
# T5 (per encoder layer: attention and MLP outputs, probabilities, the MLP activation; per decoder
# layer also cross-attention; embeddings and final norm outputs of both stacks), counted per
# layer as the average over encoder and decoder layers in constants.dropout_sites.
DROPOUT_SITES["t5"] = (("dropout_rate", "embed", 4),)
DROPOUT_SITES["bert"] = DROPOUT_SITES["roberta"] = (
    ("hidden_dropout_prob", "layer", 2), ("hidden_dropout_prob", "embed", 1), ("attention_probs_dropout_prob", "probs", 1))
# CPU SDPA with dropout_p > 0 (the math kernel, aten _scaled_dot_product_attention_math): scaled q,
# k and v expanded to all heads in fp32, the fp32 softmax output, dropout noise and dropped
# probabilities; the output in the compute dtype (read by the output projection). Tested against
# trace(device="cpu").
CPU_SDPA_DROPOUT = (("f32", "q", 3), ("compute", "q", 1), ("f32", "hs", 3))

# Linear layers per decoder layer: name -> (in_features, out_features) in units of the spec sizes.
# Used for LoRA parameter counts and validation of --lora-targets.
_LLAMA_LINEARS = {"q_proj": ("h", "q"), "k_proj": ("h", "kv"), "v_proj": ("h", "kv"), "o_proj": ("q", "h"),
                  "gate_proj": ("h", "i"), "up_proj": ("h", "i"), "down_proj": ("i", "h")}
LINEARS: dict[str, dict[str, tuple[str, str]]] = {
    "llama": _LLAMA_LINEARS, "mistral": _LLAMA_LINEARS, "qwen2": _LLAMA_LINEARS, "gemma2": _LLAMA_LINEARS,
    "mixtral": {k: v for k, v in _LLAMA_LINEARS.items() if k.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))},
    "phi3": {"qkv_proj": ("h", "q+2kv"), "o_proj": ("q", "h"), "gate_up_proj": ("h", "2i"), "down_proj": ("i", "h")},
    "gpt2": {"c_attn": ("h", "3h"), "c_proj": ("h", "h"), "c_fc": ("h", "i"), "mlp.c_proj": ("i", "h")},
    "gpt_neox": {"query_key_value": ("h", "3h"), "dense": ("h", "h"), "dense_h_to_4h": ("h", "i"), "dense_4h_to_h": ("i", "h")},
    "falcon": {"query_key_value": ("h", "q+2kv"), "dense": ("q", "h"), "dense_h_to_4h": ("h", "i"), "dense_4h_to_h": ("i", "h")},
    "opt": {"q_proj": ("h", "h"), "k_proj": ("h", "h"), "v_proj": ("h", "h"), "out_proj": ("h", "h"), "fc1": ("h", "i"), "fc2": ("i", "h")},
    "bert": {"query": ("h", "h"), "key": ("h", "h"), "value": ("h", "h"), "dense": ("h", "h"), "intermediate.dense": ("h", "i"), "output.dense": ("i", "h")},
    "t5": {"q": ("h", "q"), "k": ("h", "q"), "v": ("h", "q"), "o": ("q", "h"), "wi": ("h", "i"), "wo": ("i", "h")},
}
LINEARS["roberta"] = LINEARS["bert"]
# gpt2's "c_proj" matches both the attention and the MLP projection (peft matches by suffix).
SUFFIX_ALIASES = {"gpt2": {"c_proj": ("c_proj", "mlp.c_proj")}, "bert": {"dense": ("dense", "intermediate.dense", "output.dense")}}
SUFFIX_ALIASES["roberta"] = SUFFIX_ALIASES["bert"]


def recipe(model_type: str, fused: bool = False) -> tuple[tuple[str, str, float], ...]:
    if fused:
        return FUSED_RECIPES.get(model_type) or RECIPES.get(model_type, FUSED_RECIPES["llama"])
    return RECIPES.get(model_type, RECIPES["llama"])


def linears(model_type: str) -> dict[str, tuple[str, str]]:
    return LINEARS.get(model_type, _LLAMA_LINEARS)


def dim(expr: str, sizes: dict[str, int]) -> int:
    """'q+2kv' -> sizes['q'] + 2 * sizes['kv']; '3h' -> 3 * sizes['h']."""
    total = 0
    for term in expr.split("+"):
        digits = "".join(ch for ch in term if ch.isdigit())
        name = term[len(digits):]
        total += int(digits or 1) * sizes[name]
    return total


# LoRA (frozen base): a frozen linear does not save its input (its input gradient needs only the
# weight), a frozen RMSNorm weight does not save the normalised input, and nothing upstream of the
# first layer needs a gradient. Which linear reads which saved tensor, by target name:
LORA_ATTN_IN = {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "query", "key", "value", "q", "k", "v"}
LORA_MLP_IN = {"gate_proj", "up_proj", "gate_up_proj", "c_fc", "dense_h_to_4h", "fc1", "wi", "intermediate.dense"}
LORA_MLP_OUT = {"down_proj", "mlp.c_proj", "dense_4h_to_h", "fc2", "wo", "output.dense"}
# Families whose MLP output projection reads a tensor nothing else saves (gated: the product;
# GELU: the activation output). ReLU (OPT) saves its output anyway.
MLP_OUT_EXCLUSIVE = {"opt": False}
