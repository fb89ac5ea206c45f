"""Per-model and per-hardware constants, computed once, so each estimate is plain arithmetic.

`model_constants(spec)` turns a ModelSpec into the numbers the formulas need (parameter groups,
activation bytes per token per layer for every precision and attention kind). Nothing here imports
torch: a catalogue model is estimated without building it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perfscale.config.precision import PRECISIONS
from perfscale.estimate import families
from perfscale.specs import heads as task_heads

# (param, stream, compute) bytes per element of each dtype class under each precision (families.py),
# from config/precision.py: the residual stream is in the parameter dtype (fp32 under autocast
# "-mixed"), the matmuls in the compute dtype. The per-precision tables below are keyed by name.
PRECISION_BYTES = {name: (p.weight_bytes, p.weight_bytes, p.compute_bytes) for name, p in PRECISIONS.items()}
# LM heads whose loss is CrossEntropyLoss on the logits as they come (no `.float()`; transformers 5.x
# BertForMaskedLM, RobertaForMaskedLM, T5ForConditionalGeneration), unlike `loss_function` (ForCausalLMLoss).
NO_UPCAST_LM_LOSS = (("bert", "masked-lm"), ("roberta", "masked-lm"), ("t5", "seq2seq-lm"))
ROPE_FAMILIES = ("llama", "mistral", "mixtral", "qwen2", "gemma2", "phi3")
RMS_FAMILIES = ROPE_FAMILIES + ("t5",)
# Config keys of dropout probabilities that apply in training (GPT-2, OPT, Falcon, GPT-NeoX, Llama, Phi-3,
# BERT, T5 names); where each one acts is in families.DROPOUT_SITES.
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout", "attention_dropout", "activation_dropout",
                "hidden_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout_rate")
# What a config that omits them gets: the transformers config classes' non-zero defaults (read off
# GPT2Config(), OPTConfig(), BertConfig(), RobertaConfig(), T5Config() in transformers 5.x).
DROPOUT_DEFAULTS = {
    "gpt2": {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}, "opt": {"dropout": 0.1},
    "bert": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "roberta": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}, "t5": {"dropout_rate": 0.1},
}


# Soft-capping that a config gets when it omits the keys (Gemma2Config() defaults, transformers 5.x);
# an explicit null turns it off.
SOFTCAP_DEFAULTS = {"gemma2": {"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}}


def softcapping(spec, key: str) -> bool:
    """Whether the model soft-caps (attn_logit_softcapping / final_logit_softcapping), as its config class reads it."""
    return bool(spec.config.get(key, SOFTCAP_DEFAULTS.get(spec.model_type, {}).get(key)))


def unit_sizes(h: int, q: int, kv: int, i: int, heads: int) -> dict[str, int]:
    return {"h": h, "q": q, "kv": kv, "i": i, "heads": heads, "one": 1}


def recipe_bytes(recipe, sizes: dict[str, int], stream: int, compute: int) -> tuple[float, float, float]:
    """(replicated, split, per-s) bytes per token per layer of a recipe.

    replicated: h/one units (not split by tensor parallelism without sequence parallelism);
    split: q, kv, i, heads units (divided by the TP degree); per-s: the hs unit, multiply by s.
    """
    amp = stream == 4 and compute < 4
    width = {"f32": 4, "stream": stream, "compute": compute, "mask": 1, "autocast": compute if amp else 0,
             "amp_f32": 4 if amp else compute}
    rep = split = per_s = 0.0
    for dtype, unit, coef in recipe:
        b = width[dtype] * coef
        if unit == "hs":
            per_s += b * sizes["heads"]
        elif unit in ("h", "one"):
            rep += b * sizes[unit]
        else:
            split += b * sizes[unit]
    return rep, split, per_s


@dataclass(frozen=True)
class ModelConstants:
    """Everything estimate() needs about a model, as plain numbers."""

    name: str
    model_type: str
    layers: int  # all transformer layers (encoder + decoder)
    decoder_layers: int
    h: int
    q: int
    kv: int
    i: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None
    is_encoder_decoder: bool
    has_lm_head: bool  # vocabulary-sized logits: causal, masked or seq2seq LM head (specs/task_heads.LM_TASKS)
    params_total: int
    params_embed: int  # input embeddings (token + position)
    params_head: int  # untied output head (0 when tied to the embeddings)
    params_layer: float  # one transformer layer (all experts)
    matmul_layer: float  # linear weights in one layer (all experts)
    matmul_layer_active: float  # linear weights a token passes through (MoE: top-k experts)
    head_matmul: int  # vocab x hidden, tied or not
    largest_matrix: int
    adafactor_elems: float  # Adafactor's factored second moment: rows + cols per matrix, full per vector
    lora_dims: dict[str, tuple[int, int]] = field(default_factory=dict)
    act: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)  # (precision, attn) -> bytes
    act_fused: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)  # fused kernels
    # (program "cuda" | "cpu", precision, attn) -> bytes the dropout sites add to `act` (empty: none)
    dropout_act: dict[tuple[str, str, str], tuple[float, float, float]] = field(default_factory=dict)
    dropout_embed: dict[tuple[str, str], float] = field(default_factory=dict)  # (program, precision) -> per token
    dropout_sites: tuple[tuple[str, float], ...] = ()  # (where, count) of the sites with a probability > 0
    head_rep: dict[str, float] = field(default_factory=dict)  # final norm per token, per precision
    rope_per_seq: dict[str, float] = field(default_factory=dict)  # cos + sin bytes per sequence token
    rms_norm: bool = True
    parallel_block: bool = False  # attention and MLP read one norm output (GPT-NeoX, Falcon)
    mlp_out_exclusive: bool = True
    dropout: float = 0.0  # the largest training dropout probability in the config (see DROPOUT_KEYS)
    task: str = "causal-lm"  # the head (specs/heads.py TASKS, or "base")
    sequences_per_example: int = 1  # multiple choice: each example is MULTIPLE_CHOICES sequences
    lm_loss_upcast: bool = True  # the LM loss upcasts the logits to fp32 (transformers' loss_function)
    final_softcap: bool = False  # the head soft-caps the logits (Gemma 2 final_logit_softcapping)
    # KV heads the cache stores: Falcon's new decoder architecture broadcasts k and v to every head before
    # the cache update (modeling_falcon.py FalconAttention.forward: num_kv_heads = num_heads); 0 = kv_heads.
    cache_kv_heads: int = 0


def _without_sdpa_core(recipe, model_type: str):
    """The recipe without its SDPA saved set (q, k, v, out, logsumexp), or None when it has none."""
    core = list(families.SDPA_CORE.get(model_type, families._ATTN))
    base_terms = []
    for term in recipe:
        if term in core:
            core.remove(term)
        else:
            base_terms.append(term)
    return None if core else tuple(base_terms)


def _act_table(recipe, model_type: str, sizes: dict[str, int], softcap: bool = False) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(precision, attn) -> recipe_bytes of one layer, for sdpa and eager attention (softcap: eager soft-caps the scores)."""
    base = _without_sdpa_core(recipe, model_type)
    act: dict[tuple[str, str], tuple[float, float, float]] = {}
    for precision, (_pb, sb, cb) in PRECISION_BYTES.items():
        act[(precision, "sdpa")] = recipe_bytes(recipe, sizes, sb, cb)
        # eager: drop SDPA's saved set when the recipe has it, add eager's.
        if model_type in families.EAGER_SOFTMAX_IN_INPUT_DTYPE and sb < 4:
            eager_terms = families.EAGER + (("compute", "hs", families.EAGER_SCORES_COMPUTE),)
        else:
            eager_terms = families.EAGER + (("f32", "hs", families.EAGER_SCORES_F32),)
            if cb < 4:
                eager_terms += (("compute", "hs", families.EAGER_SCORES_COMPUTE),)
        if softcap:
            eager_terms += families.EAGER_SOFTCAP
        act[(precision, "eager")] = recipe_bytes((base or recipe) + eager_terms, sizes, sb, cb)
    return act


def dropout_sites(spec) -> tuple[tuple[str, float], ...]:
    """(where, count per layer or per token) of the model's training dropout sites whose probability is > 0."""
    sites = list(families.DROPOUT_SITES.get(spec.model_type, ()))
    cfg = spec.config
    if spec.model_type == "falcon":
        if not cfg.get("new_decoder_architecture") and not cfg.get("parallel_attn", True):
            sites.append(("attention_dropout", "layer", 1))
        if cfg.get("alibi"):
            sites.append(("attention_dropout", "probs", 1))
    if spec.model_type == "t5" and spec.is_encoder_decoder:
        enc, dec = spec.num_encoder_layers or 0, spec.num_decoder_layers or 0
        per_layer = max(1, enc + dec)
        gated = str(cfg.get("feed_forward_proj", "relu")).startswith("gated")
        sites += [("dropout_rate", "layer", (2 * enc + 3 * dec) / per_layer),
                  ("dropout_rate", "probs", (enc + 2 * dec) / per_layer), ("dropout_rate", "mlp_gated" if gated else "mlp", 1)]
    found: dict[str, float] = {}
    for key, where, count in sites:
        if _probability(spec, key) > 0:
            found[where] = found.get(where, 0) + count
    return tuple(found.items())


def _dropout_tables(recipe, model_type: str, sites, sizes: dict[str, int]) -> tuple[dict, dict]:
    """What the dropout sites add to the saved bytes per token: per layer, (program, precision,
    attn) -> (replicated, split, per-s) as recipe_bytes; once, (program, precision) -> embedding mask."""
    counts = dict(sites)
    layer_act: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    embed: dict[tuple[str, str], float] = {}
    if not counts:
        return layer_act, embed
    h, heads = sizes["h"], sizes["heads"]
    base = _without_sdpa_core(recipe, model_type)
    for program in ("cuda", "cpu"):
        def mask(width: int, program: str = program) -> int:
            return 1 if program == "cuda" else width  # bool mask vs noise in the input's dtype

        for precision, (_pb, sb, cb) in PRECISION_BYTES.items():
            embed[(program, precision)] = counts.get("embed", 0) * mask(sb) * h
            rep = counts.get("layer", 0) * mask(cb) * h
            # The MLP activation's mask, and the dropped copy the output projection now keeps when the
            # activation keeps its own output (T5's ReLU; under autocast T5 re-casts it anyway). A
            # gated product is kept by nothing else: the dropped copy replaces it.
            amp = sb == 4 and cb < 4
            mlp = (counts.get("mlp", 0) * (mask(cb) + (0 if amp else cb)) + counts.get("mlp_gated", 0) * mask(cb)) * sizes["i"]
            layer_act[(program, precision, "sdpa")] = (rep, mlp, 0.0)
            probs = 0.0
            if counts.get("probs"):
                # the mask, and the dropped probabilities that the matmul with V now keeps: they
                # replace a separate 16-bit copy, not a softmax output that softmax keeps anyway
                shared = (not amp) if model_type in families.EAGER_SOFTMAX_IN_INPUT_DTYPE else cb == 4
                probs = heads * (mask(cb) + (cb if shared else 0))
                if program == "cpu":  # SDPA runs its math kernel: swap its saved set
                    math = recipe_bytes((base or recipe) + families.CPU_SDPA_DROPOUT, sizes, sb, cb)
                    kernel = recipe_bytes(recipe, sizes, sb, cb)
                    layer_act[(program, precision, "sdpa")] = (rep + math[0] - kernel[0], mlp + math[1] - kernel[1],
                                                              math[2] - kernel[2])
            layer_act[(program, precision, "eager")] = (rep, mlp, probs)
    return layer_act, embed


def model_constants(spec) -> ModelConstants:
    h, heads, kv_heads, hd = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
    q, kv, i, vocab = heads * hd, kv_heads * hd, spec.intermediate_size, spec.vocab_size
    layers = (spec.num_encoder_layers or 0) + (spec.num_decoder_layers or 0) if spec.is_encoder_decoder else spec.num_layers
    pc = spec.params
    head_params = pc.lm_head
    per_layer = (pc.attention + pc.mlp + pc.norms + pc.other) / layers
    mlp_layer = pc.mlp / layers
    attn_layer = pc.attention / layers
    experts, topk = spec.num_experts or 0, spec.experts_per_token or 0
    active_mlp = mlp_layer * topk / experts if experts and topk else mlp_layer
    task = spec.task
    has_head = task in task_heads.LM_TASKS
    sizes = unit_sizes(h, q, kv, i, heads)
    softcap = softcapping(spec, "attn_logit_softcapping")
    act = _act_table(families.recipe(spec.model_type), spec.model_type, sizes, softcap)
    act_fused = _act_table(families.recipe(spec.model_type, fused=True), spec.model_type, sizes, softcap)
    sites = dropout_sites(spec)
    dropout_act, dropout_embed = _dropout_tables(families.recipe(spec.model_type), spec.model_type, sites, sizes)
    head_rep: dict[str, float] = {}
    rope: dict[str, float] = {}
    for precision, (_pb, sb, cb) in PRECISION_BYTES.items():
        # Final norm before the head: the same shape as a layer's norm (RMSNorm: 3 x h + 1).
        head_rep[precision] = (4 * h + 4 + sb * h + cb * h) if spec.model_type in RMS_FAMILIES else (sb * h + 8 + cb * h)
        if has_head and spec.model_type in families.POST_NORM_FAMILIES:
            # BERT / RoBERTa LM heads transform before the decoder: dense -> GELU -> LayerNorm
            # (BertPredictionHeadTransform, RobertaLMHead): the GELU input and output, the LayerNorm's
            # statistics and output, read by the decoder (measured against the trace: BERT -2.7% without it).
            head_rep[precision] += 2 * cb * h + 8 + sb * h
        rope[precision] = 2 * hd * sb if spec.model_type in ROPE_FAMILIES else 0.0
    lin = families.linears(spec.model_type)
    ext = dict(sizes, **{"2i": 2 * i})
    lora_dims = {}
    for name, (a, b) in lin.items():
        try:
            lora_dims[name] = (families.dim(a, ext), families.dim(b, ext))
        except KeyError:
            continue
    matrices = [families.dim(a, ext) * families.dim(b, ext) for a, b in lin.values()]
    rows_cols = sum(families.dim(a, ext) + families.dim(b, ext) for a, b in lin.values())
    largest = max([vocab * h] + matrices)
    vectors = pc.norms
    adafactor = layers * rows_cols + (vocab + h) * (2 if head_params else 1) + vectors
    return ModelConstants(
        name=spec.name, model_type=spec.model_type, layers=layers, decoder_layers=spec.num_layers,
        h=h, q=q, kv=kv, i=i, heads=heads, kv_heads=kv_heads, head_dim=hd, vocab=vocab,
        max_positions=spec.max_positions, is_encoder_decoder=spec.is_encoder_decoder, has_lm_head=has_head,
        params_total=pc.total, params_embed=pc.embeddings, params_head=head_params, params_layer=per_layer,
        matmul_layer=attn_layer + mlp_layer, matmul_layer_active=attn_layer + active_mlp,
        head_matmul=vocab * h if has_head else 0, largest_matrix=largest, adafactor_elems=adafactor,
        lora_dims=lora_dims, act=act, act_fused=act_fused, dropout_act=dropout_act, dropout_embed=dropout_embed,
        dropout_sites=sites, head_rep=head_rep, rope_per_seq=rope,
        rms_norm=spec.model_type in RMS_FAMILIES, parallel_block=spec.model_type in ("gpt_neox", "falcon"),
        mlp_out_exclusive=families.MLP_OUT_EXCLUSIVE.get(spec.model_type, True),
        dropout=training_dropout(spec), task=task,
        sequences_per_example=task_heads.MULTIPLE_CHOICES if task == "multiple-choice" else 1,
        lm_loss_upcast=(spec.model_type, task) not in NO_UPCAST_LM_LOSS,
        final_softcap=has_head and softcapping(spec, "final_logit_softcapping"),
        cache_kv_heads=heads if spec.model_type == "falcon" and spec.config.get("new_decoder_architecture") else 0,
    )


def _probability(spec, key: str) -> float:
    """A dropout probability of the config (else the family's transformers default; 0 when absent or not a number)."""
    value = spec.config.get(key, DROPOUT_DEFAULTS.get(spec.model_type, {}).get(key, 0.0))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def training_dropout(spec) -> float:
    """The largest dropout probability the model trains with (config value, else the family default)."""
    return max(_probability(spec, key) for key in DROPOUT_KEYS)
