"""The run config: YAML parsed once into pydantic models and passed down. Cross-field checks live in
validators, so a bad config fails before any model is loaded."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from lifelong.data.spec import DataSource, RowFormat, StreamConfig, TaskSpec, _Strict  # noqa: F401  (re-exported)
from lifelong.data.task import DPO_BETA
from lifelong.errors import UserError, read_text
from lifelong.methods.registry import MethodConfig, check_compatible, method_entry

_M = TypeVar("_M", bound=BaseModel)


PRESET_CONTEXT = 64  # a preset model's context when the config gives no max_length
# The keys that say which model a config means: a YAML that sets one of them gets no part of the model
# its built-in stream suggests (that suggestion is about another model).
MODEL_SOURCE_KEYS = ("preset", "path", "base")


class ModelConfig(_Strict):
    """A tiny preset trained from scratch (`preset`), a pretrained causal LM (`path`) or a model of
    the local cache by name (`base`, written by `lifelong pretrain`)."""

    preset: str | None = "tiny"
    path: str | None = None  # hub id or local directory
    base: str | None = None  # a model in the local cache (see `lifelong models`), e.g. en-tiny
    gguf_file: str | None = None  # a GGUF file inside `path`
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # The context of a preset model (64 if not given). Not a setting of a `path`/`base` model: its
    # context comes from the model's own config (summary.json records the one used), so it is dropped.
    max_length: int | None = Field(default=None, ge=4)
    overrides: dict[str, int] = Field(default_factory=dict)  # preset fields, e.g. hidden_size

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.base is not None:
            raise ValueError("give a 'path' or a 'base', not both")
        if self.path is not None or self.base is not None:
            self.preset = None
        if self.preset is None and self.path is None and self.base is None:
            raise ValueError("give a 'preset', a 'path' or a 'base'")
        self.max_length = None if self.preset is None else self.max_length or PRESET_CONTEXT
        return self


class TrainConfig(_Strict):
    steps_per_task: int = Field(default=500, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.02, ge=0)  # as in the self-replay paper's setup
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)  # floor of cosine/linear decay
    reset_optimizer: bool = True  # fresh AdamW moments at each task
    rewarm: bool = True  # restart warmup and schedule at each task (else one schedule for the stream)
    grad_clip: float | None = Field(default=1.0, gt=0)
    loss_on: Literal["sequence", "target"] = "sequence"  # whole sequence lets a model sample inputs
    eval_every: int | None = Field(default=None, ge=1)  # steps; the stream is also scored after each task
    eval_batch_size: int = Field(default=512, ge=1)
    eval_examples: int | None = Field(default=None, ge=1)  # cap per task (None: every eval example)
    # answers written to predictions.jsonl at each evaluation, the first N of each task (0: none)
    predictions: int = Field(default=8, ge=0)
    checkpoint_every: int | None = Field(default=None, ge=1)  # steps; plus one after each task
    keep_checkpoints: int = Field(default=2, ge=1)  # mid-task checkpoints kept (task ends are kept)
    mixed_precision: Literal["no", "bf16"] = "no"
    # Recompute each block's activations in the backward pass: less memory for long rows or big
    # models, about a third more compute per step; the numbers stay the same.
    gradient_checkpointing: bool = False
    # CPU threads (None: PyTorch's default). Part of the run's identity: float results depend on it.
    threads: int | None = Field(default=None, ge=1)
    # torch.compile the training forward (lifelong/loop.py `compiled_for_training`): ~1.3x faster
    # steps of the tiny presets on CPU, after ~10-20 s of compilation per process; off by default
    # because a short run or a test does not earn the compile time back.
    compile: bool = False


# Fields that may change when a run is resumed: they do not change what is computed.
RESUMABLE_FIELDS = {
    "name",
    "output_dir",
    "tracking",
    "tracking_project",
    "progress",
    "train.eval_batch_size",
    "train.predictions",
    "train.checkpoint_every",
    "train.keep_checkpoints",
}
# Fields added after runs were written: left out of the hash at these values, so that an older run's
# config keeps its hash (and its checkpoints resume).
ADDED_FIELDS = {"stream.keep": None, "train.gradient_checkpointing": False, "train.compile": False}
SOURCE_FIELDS_ADDED = {"messages_field": "messages", "chosen_field": "chosen", "rejected_field": "rejected"}


class RunConfig(_Strict):
    name: str = "run"
    seed: int = 0
    output_dir: str = "runs"
    stream: StreamConfig = Field(default_factory=lambda: StreamConfig(builtin="toy"))
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    methods: list[SerializeAsAny[MethodConfig]] = Field(default_factory=list, validate_default=True)
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    # the MLflow experiment and the W&B project every run joins (TensorBoard: run_dir/tracking/<it>)
    tracking_project: str = "lifelong"
    progress: bool = True  # a progress bar on the terminal

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> list[MethodConfig]:
        if value is None:
            value = []
        if isinstance(value, str | dict):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list of methods (names or mappings with a 'name'), got {value!r}")
        out = []
        for item in value:
            if isinstance(item, MethodConfig):
                out.append(item)
                continue
            if not isinstance(item, str | dict):
                raise ValueError(f"a method is a name or a mapping with a 'name', got {item!r}")
            item = {"name": item} if isinstance(item, str) else dict(item)
            try:
                entry = method_entry(str(item.get("name")))
            except KeyError as err:
                raise ValueError(err.args[0]) from None
            out.append(entry.config_cls.model_validate(item))
        return out or [method_entry("naive").config_cls(name="naive")]

    @field_validator("methods")
    @classmethod
    def _compatible(cls, value: list[MethodConfig]) -> list[MethodConfig]:
        problem = check_compatible([(m.name, method_entry(m.name).method_cls.compatibility) for m in value])
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _compile_methods(self) -> RunConfig:
        """train.compile traces the training forward once; methods that add or swap weights per task
        (adapters, expansion) would change the traced model under it, so they are refused."""
        if self.train.compile:
            for m in self.methods:
                if method_entry(m.name).method_cls.compatibility.kind != "full":
                    raise ValueError(
                        f"train.compile cannot run with method {m.name} (it changes the model per task)"
                    )
        return self

    @model_validator(mode="after")
    def _edit_methods(self) -> RunConfig:
        """An editor that needs edit tasks is refused on any other stream before a model loads."""
        editors = [m.name for m in self.methods if method_entry(m.name).method_cls.compatibility.edits_only]
        if editors and self.stream.builtin != "edits":
            where = f"stream {self.stream.builtin!r}" if self.stream.builtin else "the config's own tasks"
            raise ValueError(f"method {editors[0]} edits facts: it runs on stream: edits, not on {where}")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"run name {value!r} must be a plain directory name")
        return value

    def config_hash(self) -> str:
        """Hash of everything that changes the numbers (not of RESUMABLE_FIELDS)."""
        data = self.model_dump(mode="json")
        for dotted in RESUMABLE_FIELDS:
            *parents, leaf = dotted.split(".")
            node = data
            for key in parents:
                node = node[key]
            node.pop(leaf, None)
        drop_unset_row_format(data["stream"])
        for dotted, default in ADDED_FIELDS.items():
            section, leaf = dotted.split(".")
            if data[section].get(leaf, default) == default:
                data[section].pop(leaf, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def drop_unset_row_format(stream: dict[str, Any]) -> None:
    """Leave the row-format fields out of a hash where they are unset, so that a config written before
    they existed keeps its hash (and its checkpoints resume)."""
    for node in [stream, *(stream.get("tasks") or [])]:
        for key in RowFormat.model_fields:
            if node.get(key) is None:
                node.pop(key, None)
        if node.get("beta") == DPO_BETA:  # preference tasks' beta, at its default
            node.pop("beta")
        for split in ("train", "eval"):
            source = node.get(split)
            for key, default in SOURCE_FIELDS_ADDED.items():
                if isinstance(source, dict) and source.get(key) == default:
                    source.pop(key)


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return " ".join(f"{source}: {where}: {msg}{more}".split())


def validated(model_cls: type[_M], data: Any, source: str) -> _M:
    """Parsed YAML data as `model_cls`, or a one-line UserError naming the first problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of settings at the top level")
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise UserError(_one_line(err, source)) from None
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as err:
        # a validator that met a value of a type it did not expect (e.g. `methods: [5]`)
        raise UserError(" ".join(f"{source}: invalid config: {type(err).__name__}: {err}".split())) from None


def parse_config(data: Any, source: str = "config") -> RunConfig:
    return validated(RunConfig, data, source)


def read_config_text(path_or_name: str | Path, builtins: dict[str, Any], what: str = "config") -> str:
    """The text of a YAML file, or of a built-in config by name (`builtins`: name -> its file)."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in builtins:
        return builtins[str(path_or_name)].read_text()
    if not path.is_file():
        known = ", ".join(builtins)
        raise UserError(f"{what} {str(path_or_name)!r} not found (not a file nor a built-in: {known})")
    return read_text(path, what)


def builtin_configs() -> list[str]:
    folder = resources.files("lifelong") / "configs"
    # pretrain_*.yaml are `lifelong pretrain` configs (builtin_pretrain_configs)
    names = (p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(n for n in names if not n.startswith("pretrain_"))


def builtin_pretrain_configs() -> dict[str, Any]:
    """Built-in pretrain configs (lifelong/configs/pretrain_*.yaml) by the name of the model they make."""
    folder = resources.files("lifelong") / "configs"
    files = sorted((p for p in folder.iterdir() if re.fullmatch(r"pretrain_.*\.yaml", p.name)), key=str)
    return {(parse_yaml(p.read_text(), p.name) or {}).get("name", p.name): p for p in files}


def load_config(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config file, or a built-in config by name (see `lifelong configs`)."""
    return config_from_data(read_config_data(path_or_name), overrides, str(path_or_name))


def read_config_data(path_or_name: str | Path) -> dict[str, Any]:
    """The parsed YAML mapping of a config file or of a built-in config by name, not yet validated."""
    folder = resources.files("lifelong") / "configs"
    text = read_config_text(path_or_name, {name: folder / f"{name}.yaml" for name in builtin_configs()})
    data = parse_yaml(text, str(path_or_name))
    if data is None:  # an empty file, or only comments: never a silent default run
        raise UserError(f"config {str(path_or_name)!r} is empty")
    if not isinstance(data, dict):
        raise UserError(f"{path_or_name}: expected a mapping of settings at the top level")
    return data


def config_from_data(data: dict[str, Any], overrides: dict[str, Any] | None, source: str) -> RunConfig:
    """A config's YAML data with dotted `overrides` applied and its stream's suggestions, validated."""
    return parse_config(with_stream_suggestions(apply_overrides(data, overrides or {})), source=source)


def with_stream_suggestions(data: dict[str, Any], schedule_alone: bool = False) -> dict[str, Any]:
    """A config of a built-in stream with the `model` and `train` settings that stream suggests (the
    ones `lifelong run --stream NAME` starts from) for every key the config does not set itself. A
    config that names its model (`preset`, `path` or `base`) keeps it and its own schedule: the
    stream's suggestions go together (unless `schedule_alone`). Unknown streams and
    malformed sections are left as they are, for the validation to name."""
    stream = data.get("stream")
    name = stream.get("builtin") if isinstance(stream, dict) else stream
    if not isinstance(name, str):
        return data
    from lifelong.data import builtin_streams

    info = builtin_streams().get(name)
    if info is None:
        return data
    out = dict(data)
    model, train = out.get("model", {}), out.get("train", {})
    own_model = not isinstance(model, dict) or any(k in model for k in MODEL_SOURCE_KEYS)
    if own_model and not schedule_alone:
        return out  # the config's own model: the stream's schedule was tuned for another one
    if info.model and not own_model:
        out["model"] = {**info.model, **model}
    if info.train and isinstance(train, dict):
        out["train"] = {**info.train, **train}
    return out


def parse_yaml(text: str, source: str) -> Any:
    """YAML text parsed, or a one-line UserError naming the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "cannot parse"
        raise UserError(" ".join(f"malformed YAML in {source}{where}: {problem}".split())) from None
    except (ValueError, TypeError, RecursionError) as err:  # e.g. a date `2021-13-01`, or nesting too deep
        problem = f"{type(err).__name__}: {err}"
        raise UserError(" ".join(f"malformed YAML in {source}: {problem}".split())) from None


def method_list(spec: str) -> list[dict[str, Any]]:
    """Methods composed by `+`, each with options after colons (values read as YAML scalars):
    `self_replay:loss=kl:coef=10+lora` -> [{"name": "self_replay", "loss": "kl", "coef": 10},
    {"name": "lora"}]."""
    methods = []
    for part in spec.split("+"):
        name, *options = part.strip().split(":")
        method: dict[str, Any] = {"name": name.strip()}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or not key.strip():
                raise UserError(f"method {part!r}: options are written name:key=value, got {option!r}")
            method[key.strip()] = parse_yaml(value, f"method {part!r} option {key.strip()!r}")
        methods.append(method)
    return methods


def run_name(*parts: str) -> str:
    """A run directory name from a stream/config name and a method spec (colons become dashes)."""
    return "-".join(parts).replace(":", "-")


def stream_config(stream: str, methods: str = "naive", overrides: dict[str, Any] | None = None) -> RunConfig:
    """A run of a built-in stream with the model and training settings the stream suggests."""
    from lifelong.data import builtin_streams

    streams = builtin_streams()
    if stream not in streams:
        raise UserError(f"unknown stream {stream!r} (known: {', '.join(streams)})")
    composed = with_adapter(methods, streams[stream].adapter)
    adapters = (
        "+".join(m["name"] for m in method_list(streams[stream].adapter)) if composed != methods else ""
    )
    shown = f"{methods}+{adapters}" if adapters else methods
    data = {"name": run_name(stream, shown), "stream": {"builtin": stream}, "methods": method_list(composed)}
    # the stream's schedule even with a model of the command line's own (`--set model.path=...`)
    data = with_stream_suggestions(apply_overrides(data, overrides or {}), schedule_alone=True)
    return parse_config(data, source=f"stream {stream}")


def with_adapter(methods: str, adapter: str) -> str:
    """`methods` composed with a stream's suggested `adapter` unless one of them adds weights itself
    (lora_per_task, olora, prompt_tuning, ...) or none of them trains (retrieval); `naive` alone
    becomes the adapter's run."""
    if not adapter:
        return methods
    names = [m["name"] for m in method_list(methods)]
    try:
        kinds = [method_entry(n).method_cls.compatibility for n in names]
        if any(c.architecture for c in kinds) or not any(c.trains for c in kinds):
            return methods
    except KeyError as err:
        raise UserError(err.args[0]) from None
    return adapter if names == ["naive"] else f"{methods}+{adapter}"


def apply_overrides(data: Any, overrides: dict[str, Any]) -> Any:
    """Set dotted keys (`train.lr`) in a parsed YAML mapping, creating mappings on the way; a number
    picks an entry of a list (`methods.0.coef`: the first method's; a method written as a string,
    `ewc:coef=1`, becomes its mapping)."""
    data = dict(data or {}) if isinstance(data, dict) or data is None else data
    for dotted, value in overrides.items():
        node, keys = data, dotted.split(".")
        for key, following in zip(keys[:-1], keys[1:], strict=True):
            node = copied_child(node, key, following.isdigit(), dotted)
        if isinstance(node, list):
            node[list_index(node, keys[-1], dotted)] = value
        else:
            node[keys[-1]] = value
    return data


def copied_child(node: dict | list, key: str, list_wanted: bool, dotted: str) -> dict | list:
    """`node[key]` replaced by a copy (a new mapping, or list when the next key is a number, if it is
    missing) and returned: the input of `apply_overrides` is never changed."""
    if isinstance(node, list):
        i = list_index(node, key, dotted)
        child = node[i]
        node[i] = dict(method_list(child)[0] if isinstance(child, str) else child or {})
        return node[i]
    child = node.get(key)
    if isinstance(child, str) and key == "stream":  # the `stream: toy` shorthand
        child = {"builtin": child}
    if isinstance(child, list) or (child is None and list_wanted):
        node[key] = list(child or [])  # `methods.0.coef` with no methods: no entry 0
    else:
        node[key] = dict(child) if isinstance(child, dict) else {}
    return node[key]


def list_index(node: list, key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise UserError(f"--set {dotted}: {key!r} is not an entry of a list of {len(node)}")
    return int(key)
