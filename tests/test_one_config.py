"""One typed configuration (issue 13): a RunConfig field is a knob everywhere, or this fails.

For every RunConfig field: a docstring (its --help), the engines that honour it, a CLI option on
exactly the verbs whose engine honours it (plan: estimate, trace, bench/compare: measure), a Knobs
slot, a compare inline key and a plan knob name; a non-default value round-trips through to_dict/from_dict
and through Knobs. The fields are read from the dataclass, so a new field is covered without editing
this file; a kind of value it cannot draw a sample for fails here, naming the field.

A field with _knob(search=...) is opened by plan's search, pinned at its default when every core knob is
given, ranked by tune/rank.complexity and printed in plan's table; the lists those read derive from the
metadata, and today's values are pinned below, so a new searched knob is a deliberate edit here.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import typer

from perfscale.cli import knobs as cli_knobs
from perfscale.cli.app import app
from perfscale.cli.bench import CONFIG_FLAGS
from perfscale.config.run_config import (
    CHOICES,
    ENGINES,
    INT_RANGES,
    KNOB_CORE,
    KNOB_DEFAULTS,
    KNOB_ENGINES,
    KNOB_FIELDS,
    KNOB_MODE,
    KNOB_SEARCH,
    KNOB_WEIGHT,
    MODES,
    RunConfig,
    choices_text,
    field_help,
)
from perfscale.errors import InvalidConfigError
from perfscale.estimate.knobs import WORKLOAD_DEFAULTS, Knobs
from perfscale.cli.inline_config import INLINE_KEYS, parse_inline
from perfscale.measure.bench_config import BenchConfig
from perfscale.specs import InferWorkload, TrainWorkload
from perfscale.report import plan_tables
from perfscale.specs import parse_topology
from perfscale.tune import space
from perfscale.tune.plan import CORE_KNOBS, KNOB_NAMES, SECONDARY_DEFAULTS
from perfscale.tune.rank import complexity

VERBS = cli_knobs.VERB_ENGINE
# Knobs that are only valid beside another one (RunConfig.problems says why).
COMPANIONS = {"pp_virtual": {"pp": 2}, "lora_targets": {"lora_r": 8}, "quantization": {"lora_r": 8}}
# Keys beside a knob in compare's inline syntax that the knob needs there (a ZeRO stage is measured by DeepSpeed).
# FSDP2's knobs (reshard_after_forward, CPUOffloadPolicy) are measured with strategy fsdp2.
INLINE_COMPANIONS = {"zero": {"strategy": "deepspeed", "nproc": 2}, "fsdp_reshard": {"strategy": "fsdp2"},
                     "offload": {"strategy": "fsdp2"}}
# A value bench measures where the round-trip's sample is not one (FSDP2 has no optimizer-only offload policy).
INLINE_SAMPLES = {"offload": "optimizer+params"}


def _sample(name: str):
    """A valid value other than the default."""
    default = KNOB_DEFAULTS[name]
    if isinstance(default, bool):
        return not default
    if name in CHOICES:
        return next(c for c in CHOICES[name] if c != default and not str(c).endswith("-mixed"))
    if name in INT_RANGES:
        low, _ = INT_RANGES[name]
        return low + 1 if default is None else default + 1
    if name == "lora_targets":
        return ("q_proj", "v_proj")
    raise AssertionError(f"no sample value for RunConfig.{name}: add one to _sample in tests/test_one_config.py")


def _config(name: str, value) -> RunConfig:
    workload = InferWorkload(2, 16, 4) if KNOB_MODE.get(name) == "infer" else TrainWorkload(2, 16, 2)
    return RunConfig(workload, **(COMPANIONS.get(name, {}) | {name: value}))


def _options(verb: str) -> dict[str, object]:
    command = typer.main.get_command(app).commands[verb]
    return {param.name: param for param in command.params}


def test_run_config_is_frozen_and_slotted():
    config = RunConfig(TrainWorkload(1, 8))
    assert not hasattr(config, "__dict__") and "__slots__" in vars(RunConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tp = 2  # type: ignore[misc]


@pytest.mark.parametrize("name", ("workload", *KNOB_FIELDS))
def test_every_field_has_a_docstring(name):
    assert len(field_help().get(name, "")) > 10, f"RunConfig.{name} needs a docstring under it (its --help)"


@pytest.mark.parametrize("name", KNOB_FIELDS)
def test_every_knob_names_the_engines_that_honour_it(name):
    assert KNOB_ENGINES[name] and set(KNOB_ENGINES[name]) <= set(ENGINES), (
        f"RunConfig.{name}: say which engines honour it, e.g. _knob(default, \"estimate\")")


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_verb_offers_exactly_the_knobs_its_engine_honours(verb):
    options, engine = _options(verb), VERBS[verb]
    for name in KNOB_FIELDS:
        if engine not in KNOB_ENGINES[name]:
            assert name not in options, f"perfscale {verb} offers {cli_knobs.flag(name)}, which {engine} ignores"
            continue
        assert name in options, f"perfscale {verb} has no {cli_knobs.flag(name)}: generate it (cli/knobs.with_knobs)"
        option = options[name]
        assert option.opts == [cli_knobs.flag(name)] and option.default is None, (verb, name, option.opts)
        assert field_help()[name] in option.help, (verb, name)  # the docstring is the help
        if choices_text(name):
            assert choices_text(name) in option.help, (verb, name)
        if isinstance(KNOB_DEFAULTS[name], bool):
            assert option.secondary_opts == ["--no-" + cli_knobs.flag(name)[2:]], (verb, name)


def test_bench_config_flags_cover_its_knob_options():
    """bench --config FILE refuses a knob flag beside it: every knob option of bench is in CONFIG_FLAGS."""
    assert set(cli_knobs.knob_names("measure")) <= set(CONFIG_FLAGS) <= set(_options("bench"))


def test_derived_name_lists():
    assert Knobs.FIELDS == (*WORKLOAD_DEFAULTS, *KNOB_FIELDS) and set(Knobs.__slots__) == {*Knobs.FIELDS, "prec"}
    assert set(KNOB_NAMES) == {*KNOB_FIELDS, "grad_accum"}
    for name in KNOB_FIELDS:
        assert INLINE_KEYS[name][0] == f"run.{name}", name


@pytest.mark.parametrize("name", KNOB_FIELDS)
def test_a_non_default_value_round_trips_everywhere(name):
    value = _sample(name)
    config = _config(name, value)
    assert getattr(config, name) == value
    document = config.to_dict()
    assert RunConfig.from_dict(document) == config
    knobs = Knobs.from_run_config(config)
    assert getattr(knobs, name) == value and knobs.copy().to_run_config() == config
    assert Knobs(**{k: getattr(knobs, k) for k in Knobs.FIELDS}).to_run_config() == config
    assert (name in knobs.as_dict()) == (KNOB_MODE.get(name, config.mode) == config.mode)
    if "measure" in KNOB_ENGINES[name] and KNOB_MODE.get(name) != "infer":  # compare's inline syntax
        value = INLINE_SAMPLES.get(name, value)
        text = f"{name}={'+'.join(value) if isinstance(value, tuple) else value}"
        companions = ",".join(f"{k}={v}" for k, v in (COMPANIONS.get(name, {}) | INLINE_COMPANIONS.get(name, {})).items())
        scenario = "scenario=train,batch=2,seq=16,grad_accum=2"
        inline = ",".join(filter(None, [scenario, companions, text]))
        if name == "zero" and importlib.util.find_spec("deepspeed") is None:  # measured by DeepSpeed, an optional extra
            with pytest.raises(InvalidConfigError, match=r"pip install 'perfscale\[deepspeed\]'"):
                parse_inline(inline, BenchConfig())
            return
        assert getattr(parse_inline(inline, BenchConfig()).run, name) == value


def test_fields_at_their_default_are_not_written():
    """Documents (and the bench fingerprints hashed from them) stay as they were before the later knobs existed."""
    document = RunConfig(TrainWorkload(1, 8)).to_dict()
    later = KNOB_FIELDS[KNOB_FIELDS.index("pp_virtual"):]
    assert not set(later) & set(document)
    assert BenchConfig().fingerprint() == "613fac6e6fe4ec1f"  # as computed before issue 13
    assert BenchConfig(scenario="generate", run=RunConfig(InferWorkload(1, 32, 8), cache="static")).fingerprint() == "1883aac3a180032b"


def test_old_documents_extra_loads_into_fields_and_typos_are_refused():
    old = RunConfig(TrainWorkload(1, 8)).to_dict() | {"extra": {
        "sequence_parallel": True, "recompute": "selective", "fused_kernels": True, "pp_embedding_as_layer": True,
        "torch_num_threads": 2, "dataloader_num_workers": 1}}
    config = RunConfig.from_dict(old)
    assert config.sequence_parallel and config.selective_recompute and config.fused_kernels and config.pp_embedding_as_layer
    assert (config.torch_num_threads, config.dataloader_num_workers) == (2, 1)
    with pytest.raises(InvalidConfigError, match="sequence_paralel"):
        RunConfig.from_dict(old | {"extra": {"sequence_paralel": True}})
    with pytest.raises(InvalidConfigError, match="Unknown configuration keys: colour"):
        RunConfig.from_dict(old | {"colour": "red"})


def test_every_problem_at_once():
    with pytest.raises(InvalidConfigError) as info:
        RunConfig(TrainWorkload(1, 8), sequence_parallel="yes", torch_num_threads=10**24, dataloader_num_workers=-1)
    message = str(info.value)
    assert "sequence_parallel must be true or false" in message
    assert "torch_num_threads must be an integer >= 1" in message and "dataloader_num_workers" in message


def test_bench_and_compare_share_one_set_of_measure_flags():
    """The flags of what and how to measure are declared once (cli/measure_flags.py) and both verbs
    take every one of them, with the same option names and defaults."""
    from perfscale.cli.measure_flags import OPTIONS, MeasureFlags

    assert set(OPTIONS) == {f.name for f in dataclasses.fields(MeasureFlags)}
    bench, compare = _options("bench"), _options("compare")
    for name in OPTIONS:
        assert name in bench and name in compare, name
        assert bench[name].opts == compare[name].opts and bench[name].default == compare[name].default, name


OPEN = {"train": space.TRAIN_OPEN, "infer": space.INFER_OPEN}


@pytest.mark.parametrize("name", sorted(KNOB_SEARCH))
def test_a_searched_knob_is_opened_pinned_ranked_and_shown(name):
    """What _knob(search=...) promises, for every searched field (a new one included without an edit here)."""
    assert KNOB_SEARCH[name] and set(KNOB_SEARCH[name]) <= {KNOB_MODE.get(name, m) for m in MODES}, (
        f"RunConfig.{name} is searched in {KNOB_SEARCH[name]} but is a {KNOB_MODE.get(name)} knob")
    assert name in KNOB_WEIGHT, f"RunConfig.{name} is searched: give it a complexity weight (_knob(weight=...), 0 if none)"
    weight, plain = KNOB_WEIGHT[name]
    assert weight >= 0 and KNOB_DEFAULTS[name] in plain, (name, weight, plain)  # the default configuration scores 0
    assert "estimate" in KNOB_ENGINES[name], f"plan searches RunConfig.{name} with the estimate engine, which must honour it"
    for mode in KNOB_SEARCH[name]:
        assert name in OPEN[mode] and name in plan_tables._SHOWN[mode], (name, mode)
        assert (name in CORE_KNOBS[mode]) != (name in SECONDARY_DEFAULTS or KNOB_DEFAULTS[name] is None), (
            f"RunConfig.{name}: a searched knob is core or pinned at its default when every core knob is given")


def test_the_derived_lists_are_todays():
    """Pinned as they were hand-kept before issue 13 (order aside: declaration order now). A new searched knob
    fails here until it is added, after checking that tune/space.py tries its values."""
    assert set(space.TRAIN_OPEN) == {"precision", "optimizer", "checkpointing", "attn", "zero", "fsdp", "tp", "pp",
                                     "pp_virtual", "cp", "offload", "micro_batch", "sequence_parallel", "fused_kernels",
                                     "selective_recompute", "pp_embedding_as_layer"}
    assert space.TRAIN_OPEN[-1] == "micro_batch" and len(set(space.TRAIN_OPEN)) == len(space.TRAIN_OPEN)
    assert set(space.INFER_OPEN) == {"precision", "quantization", "kv_cache_dtype", "tp", "attn", "cache"}
    assert set(CORE_KNOBS["train"]) == {"precision", "optimizer", "checkpointing", "attn", "tp", "pp"} == KNOB_CORE
    assert set(CORE_KNOBS["infer"]) == {"precision", "tp", "attn"}
    assert SECONDARY_DEFAULTS == {"zero": 0, "pp_virtual": 1, "cp": 1, "offload": "none", "quantization": "none",
                                  "cache": "dynamic", "kv_cache_dtype": "auto", "sequence_parallel": False,
                                  "fused_kernels": False, "selective_recompute": False,
                                  "pp_embedding_as_layer": False}


def test_plan_search_tries_every_open_knob():
    """The metadata and tune/space.py agree: on 8 H100s at 16,384 tokens (long enough for cp 2) the training
    space and its memory savers vary every knob of TRAIN_OPEN, and nothing else of RunConfig's; the inference
    space every knob of INFER_OPEN. attn stays sdpa in the estimated space (space.attention_choices: eager
    is never faster there; tune measures it)."""
    hw = parse_topology("8xH100-80GB").hardware
    seen: dict[str, set] = {name: set() for name in (*KNOB_FIELDS, "micro_batch")}
    for k in space.train_space(Knobs(batch=4, seq=16384, accum=2), {}, 32, 32, 8, 8, hw):
        for v in space.memory_savers(k, {}, hw):
            for name in KNOB_FIELDS:
                seen[name].add(getattr(v, name))
            seen["micro_batch"].add(v.batch)
    varied = {name for name, values in seen.items() if len(values) > 1}
    assert varied == set(space.TRAIN_OPEN) - {"attn"}
    seen = {name: set() for name in KNOB_FIELDS}
    for k in space.infer_space(Knobs(mode="infer", batch=8, prompt=8, new_tokens=8, seq=16), {}, 32, 8, 8, hw):
        for name in KNOB_FIELDS:
            seen[name].add(getattr(k, name))
    assert {name for name, values in seen.items() if len(values) > 1} == set(space.INFER_OPEN) - {"attn"}


# tune/rank.complexity as it was written by hand before issue 13: a value away from plain and its score
# (0: not counted in that mode). Every other field counts 0; the scores add up.
COMPLEXITY = {
    "train": {"checkpointing": (True, 1), "zero": (2, 1), "fsdp": (4, 1), "offload": ("optimizer", 2), "tp": (2, 1),
              "pp": (2, 1), "pp_virtual": (2, 1), "cp": (2, 1), "quantization": ("nf4", 1), "optimizer": ("sgd", 1),
              "sequence_parallel": (True, 1), "fused_kernels": (True, 1), "selective_recompute": (True, 1)},
    "infer": {"tp": (2, 1), "pp": (2, 1), "quantization": ("int8", 1), "sequence_parallel": (True, 1),
              "fused_kernels": (True, 1), "checkpointing": (True, 0), "zero": (3, 0), "offload": ("optimizer", 0),
              "optimizer": ("sgd", 0), "selective_recompute": (True, 0), "cache": ("static", 0),
              "kv_cache_dtype": ("fp8", 0)},
}


@pytest.mark.parametrize("mode", MODES)
def test_complexity_keeps_its_scores(mode):
    base = Knobs(mode=mode)
    assert complexity(base) == 0
    for name in KNOB_FIELDS:
        value, score = COMPLEXITY[mode].get(name, (_sample(name), 0))
        assert complexity(base.copy(**{name: value})) == score, (mode, name, value)
    assert complexity(base.copy(optimizer="adamw_torch")) == 0  # every AdamW implementation is plain
    everything = base.copy(**{name: value for name, (value, _) in COMPLEXITY[mode].items()})
    assert complexity(everything) == sum(score for _, score in COMPLEXITY[mode].values())


def test_plan_table_prints_todays_knobs_as_before_and_any_knob_off_its_default():
    train = Knobs(batch=4, accum=2, precision="bf16-mixed", checkpointing=True, zero=3, tp=2, pp=2).as_dict()
    assert plan_tables._knob_text(train, "train") == (
        "precision=bf16-mixed optimizer=adamw_torch_fused checkpointing attn=sdpa batch=4 accum=2 zero=3 tp=2 pp=2")
    infer = Knobs(mode="infer", batch=8, prompt=8, new_tokens=8, precision="bf16").as_dict()
    assert plan_tables._knob_text(infer, "infer") == "precision=bf16 attn=sdpa batch=8 tp=1 cache=dynamic kv_cache_dtype=auto"
    lora = Knobs(lora_r=16, lora_targets=("q_proj", "v_proj")).as_dict()
    assert "lora_r=16 lora_targets=q_proj,v_proj" in plan_tables._knob_text(lora, "train")
    def printed(knobs: Knobs, mode: str) -> set[str]:
        return {part.split("=")[0] for part in plan_tables._knob_text(knobs.as_dict(), mode).split()}

    for mode in MODES:  # a field the estimate honours in the mode, e.g. a new one, is printed when off its default
        for name in plan_tables._SHOWN[mode]:
            if name in KNOB_DEFAULTS and name not in plan_tables._ALWAYS[mode]:
                assert name in printed(Knobs(mode=mode, **{name: _sample(name)}), mode), (mode, name)
                assert name not in printed(Knobs(mode=mode), mode), (mode, name)
