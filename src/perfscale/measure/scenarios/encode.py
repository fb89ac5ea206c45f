"""`encode`: sentence embeddings of the shipped corpus (real sentences, natural lengths).

One iteration encodes the same `sentences` corpus sentences (default 4 batches), in batches of
`batch`, through `perfscale.runtimes.encoder` (eager / torch.compile / ONNX Runtime, int8): the
tool's one implementation of export and quantization. Padding is the library's usual one: each
batch is padded to its longest sentence, sentences sorted by length first (as sentence-transformers).
"""

from __future__ import annotations

from perfscale.errors import UnsupportedModelError
from perfscale.measure.corpus import load_sentences
from perfscale.measure.scenarios.common import Scenario, forward_flops


def encoder_settings(config):
    """EncoderSettings for a BenchConfig (extra['encoder'] passes further fields through)."""
    from perfscale.runtimes.encoder import EncoderSettings

    run = config.run
    extra = dict(config.extra.get("encoder", {}))
    return EncoderSettings(
        backend=config.backend, quantization=config.encoder_quantization, precision=run.precision,
        threads=config.threads, batch_size=run.workload.batch, max_length=run.workload.prompt, **extra,
    )


def setup(config, device: str) -> Scenario:
    from perfscale.runtimes.encoder import load_encoder

    if device == "cuda":
        raise UnsupportedModelError("the encode scenario runs the CPU encoder runtimes; use --device cpu (GPU encode is not implemented)")
    settings = encoder_settings(config)
    encoder = load_encoder(config.model, settings, cache_dir=config.extra.get("onnx_cache_dir"))
    n = config.sentences or 4 * config.run.workload.batch
    sentences = load_sentences(n)
    lengths = [len(ids) for ids in encoder.tokenizer(sentences, truncation=True, max_length=encoder.max_length)["input_ids"]]
    tokens = sum(lengths)

    flops = None
    try:
        from perfscale.specs import load_model_spec

        spec = load_model_spec(config.model if config.model.lower() != "all-minilm-l6-v2" else "minilm")
        # Forward FLOPs over the real tokens (padding excluded), attention context = each sentence's length.
        flops = sum(forward_flops(spec, n_tok, n_tok) for n_tok in lengths)
    except Exception:  # noqa: BLE001 - MFU is optional: an unknown parameter count gives "n/a"
        flops = None
    peak = "int8" if config.encoder_quantization != "none" else config.run.prec.peak_key

    def step() -> None:
        encoder.encode(sentences)

    def outputs():
        return {"embeddings": encoder.encode(sentences)}

    return Scenario(
        step=step, samples_per_iter=n, tokens_per_iter=tokens, flops_per_iter=flops, peak_dtype=peak,
        torch_memory=config.backend != "onnxruntime", outputs=outputs,
        setup_metrics={
            "sentences": n, "tokens": tokens, "max_length": encoder.max_length, "encoder": repr(encoder),
            "onnx_path": getattr(encoder, "onnx_path", None), "mean_tokens_per_sentence": tokens / n,
        },
    )
