"""Tiny configs of every covered family: real transformers classes, seconds to build, no downloads.

Each keeps the family's distinguishing features (GQA, MoE, QKV bias, tied embeddings,
sliding window, soft-capping, parallel attention, enc-dec) at toy sizes.
"""

from __future__ import annotations

import copy

_TINY = {
    "gpt2": {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2, "n_head": 4,
        "n_positions": 128, "vocab_size": 320, "bos_token_id": 0, "eos_token_id": 0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    },
    "llama": {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 320,
        "max_position_embeddings": 256, "tie_word_embeddings": False,
    },
    "mistral": {
        "model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 320,
        "max_position_embeddings": 256, "sliding_window": None, "tie_word_embeddings": False,
    },
    "mixtral": {
        "model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 320,
        "max_position_embeddings": 256, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None,
        "tie_word_embeddings": False,
    },
    "qwen2": {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 320,
        "max_position_embeddings": 256, "tie_word_embeddings": True,
    },
    "gemma2": {
        "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 160,
        "vocab_size": 320, "max_position_embeddings": 256, "sliding_window": 64, "query_pre_attn_scalar": 16,
    },
    "phi3": {
        "model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 160, "vocab_size": 320,
        "max_position_embeddings": 256, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": False,
    },
    "gpt_neox": {
        "model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 320, "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    },
    "opt": {
        "model_type": "opt", "architectures": ["OPTForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "ffn_dim": 256, "vocab_size": 320, "max_position_embeddings": 256,
        "word_embed_proj_dim": 64, "dropout": 0.0, "attention_dropout": 0.0,
    },
    "falcon": {
        "model_type": "falcon", "architectures": ["FalconForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 320, "new_decoder_architecture": True, "num_kv_heads": 2,
        "parallel_attn": True, "bias": False, "alibi": False,
    },
    "bert": {
        "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 320, "max_position_embeddings": 128,
    },
    "roberta": {
        "model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 320, "max_position_embeddings": 130,
        "pad_token_id": 1,
    },
    "t5": {
        "model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 64, "d_kv": 16, "d_ff": 128,
        "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4, "vocab_size": 320, "feed_forward_proj": "relu",
        "dropout_rate": 0.0,
    },
}

FAMILIES = tuple(_TINY)
DECODER_FAMILIES = tuple(f for f in FAMILIES if f not in ("bert", "roberta", "t5"))


def tiny_config(family: str, **overrides) -> dict:
    """A fresh copy of the family's tiny config.json dict, with overrides applied."""
    config = copy.deepcopy(_TINY[family])
    config.update(overrides)
    return config


def tiny_model_folder(parent, family: str = "llama") -> str:
    """A model folder (config.json only: random weights) of `family`'s tiny config under `parent`."""
    import json
    from pathlib import Path

    folder = Path(parent) / f"tiny-{family}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_config(family)))
    return str(folder)
