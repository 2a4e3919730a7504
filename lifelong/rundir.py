"""The run directory: config, logs, results and checkpoints, all written atomically, no pickle.

runs/<name>/
  config.yaml            the resolved config
  environment.json       what float results depend on besides the config: CPU, libraries, threads
  train_log.jsonl        one line per training step
  evals.jsonl            every evaluation of the whole stream (for the curves)
  predictions.jsonl      at each evaluation, each task's first answers next to their targets
  matrix.json/.csv       the accuracy matrix with the initial model's row
  summary.json           AA, AIA, FGT, BWT, FWD, times (and the kept columns' drops)
  curves.png             every task's score over training steps
  samples.jsonl          what self-replay sampled at each refresh (the first rows per replayed task)
  retrieval.jsonl        retrieval's memory size per task and query latency per evaluated task
  retrieval/             retrieval's memory for users: index.faiss (faiss format), documents.json
  checkpoints/<tag>/     model.safetensors, optimizer.*, method-<i>.*, rng.safetensors, progress.json;
                         on a pretrained base, trained.safetensors (only what can differ from the
                         base: adapters, prompts, new rows, trained base tensors) and base.json instead
  checkpoints/latest     the tag of the newest complete checkpoint
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, load_model, save_file, save_model

from lifelong.config import RESUMABLE_FIELDS, RunConfig, parse_config, parse_yaml
from lifelong.errors import UserError, first_line, read_text, reading


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint as progress.json."""

    config_hash: str
    task: int = 0  # the task being trained (== number of tasks when finished)
    step: int = 0  # steps of `task` already done
    baseline: list[float] | None = None  # scores of the initial model, before any training
    matrix: list[list[float]] = field(default_factory=list)  # row k: after task k
    kept: list[str] = field(default_factory=list)  # kept columns, after the tasks' in every row
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    trainable_params: int = 0  # the most parameters trained at once (the peak over tasks)
    total_params: int = 0  # every parameter of the trained model, adapters included
    trained_base: list[str] = field(default_factory=list)  # base parameters trainable at a task start
    # tokens in the training steps' batches (new rows and replayed ones, padding not counted); under
    # several processes the main process's count times their number. Older checkpoints: 0.
    trained_tokens: int = 0

    def __post_init__(self) -> None:  # read back from JSON, a diverged score is the string "nan"
        self.baseline = None if self.baseline is None else [float(x) for x in self.baseline]
        self.matrix = [[float(x) for x in row] for row in self.matrix]

    @property
    def finished(self) -> bool:
        return bool(self.matrix) and self.task >= len(self.matrix[0]) - len(self.kept)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `path` whole or not at all: a failure (e.g. a full disk) leaves no partial or temporary file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise UserError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float written as the string "nan", "inf" or "-inf": standard JSON,
    and apart from null (which a run writes for a metric that is undefined, e.g. forgetting at k = 1).
    `float()` reads each back."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file of a run, or a one-line UserError naming it (unreadable, not UTF-8, not JSON)."""
    with reading(path, what):
        return json.loads(path.read_text(encoding="utf-8"))


def warn(message: str) -> None:
    """A warning line on stderr; under several processes from rank 0 only (they all see the same)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"warning: {message}", file=sys.stderr, flush=True)


def environment(threads: int | None = None) -> dict[str, Any]:
    """What a run's float results depend on besides its config: the CPU and its kernels (through the
    libraries' versions), the thread count and the device. `threads`: the count the run will set."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "device": device_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{package: installed(package) for package in ("transformers", "peft", "accelerate")},
        "platform": platform.platform(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the leaves that differ between two dumped configs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, dotted = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{dotted}.")
        elif a != b:
            out.append(dotted)
    return out


def resumable(dotted: str) -> bool:
    return any(dotted == f or dotted.startswith(f"{f}.") for f in RESUMABLE_FIELDS)


BASE_FILE = "base.json"  # in a checkpoint on a pretrained base: the base's source and weights hash


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.ckpt_dir = path / "checkpoints"

    @classmethod
    def create(cls, cfg: RunConfig) -> RunDir:
        """A new directory `output_dir/name`, or `name-2`, `name-3`... if that one exists."""
        root = Path(cfg.output_dir)
        path, n = root / cfg.name, 1
        while path.exists():
            n += 1
            path = root / f"{cfg.name}-{n}"
        try:
            path.mkdir(parents=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run directory {str(path)!r}: {err.strerror or err}") from None
        run = cls(path)
        atomic_write(path / "config.yaml", config_yaml(cfg))
        write_json(path / "environment.json", environment(cfg.train.threads))
        return run

    def remove_if_unstarted(self) -> None:
        """Remove the directory if it holds nothing but what `create` wrote (a run that failed to start,
        e.g. on missing data), so that a failed start leaves no half-made run behind."""
        written_by_create = {"config.yaml", "environment.json"}
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= written_by_create:
            shutil.rmtree(self.path)

    @classmethod
    def open(cls, path: Path, cfg: RunConfig | None = None) -> tuple[RunDir, RunConfig]:
        """An existing run to resume; `cfg`, if given, must compute the same thing as the saved one."""
        saved = parse_config(saved_config_data(path), str(path / "config.yaml"))
        if cfg is not None:
            check_resumable(path, saved, cfg)
        if not os.access(path, os.W_OK):
            raise UserError(f"cannot write the run directory {str(path)!r}")
        run = cls(path)
        if cfg is not None and cfg != saved:  # only resumable fields changed: record what the run now uses
            atomic_write(path / "config.yaml", config_yaml(cfg))
        run.check_environment((cfg or saved).train.threads)
        return run, cfg or saved

    @property
    def finished(self) -> bool:
        """The run trained every task and wrote its results (summary.json is written last)."""
        return (self.path / "summary.json").is_file()

    def finished_state(self, cfg: RunConfig | None = None) -> tuple[RunConfig, Progress, list[str]]:
        """A finished run's config, progress (from its last checkpoint) and task names (matrix.json);
        `cfg`, if given, must compute the same thing as the saved config (it is not written)."""
        saved = parse_config(saved_config_data(self.path), str(self.path / "config.yaml"))
        if cfg is not None:
            check_resumable(self.path, saved, cfg)
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise UserError(f"{str(self.path)!r} is finished but holds no checkpoint to read its progress")
        progress = Progress(**read_json(ckpt / "progress.json", "checkpoint file"))
        return saved, progress, read_json(self.path / "matrix.json", "results file")["tasks"]

    def check_environment(self, threads: int | None) -> None:
        """Warn when a run is resumed on another machine, library version or thread count."""
        saved_path = self.path / "environment.json"
        if not saved_path.is_file():
            return
        saved, now = read_json(saved_path, "environment file"), environment(threads)
        changed = [k for k in now if k != "platform" and saved.get(k) != now[k]]
        if changed:
            diff = ", ".join(f"{k} {saved.get(k)} -> {now[k]}" for k in changed)
            warn(f"resuming in another environment ({diff}): the numbers may differ from an unbroken run")

    # ---------------------------------------------------------------- logs
    def append(self, name: str, record: dict[str, Any]) -> None:
        try:
            with (self.path / name).open("a") as f:
                f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        except OSError as err:
            raise UserError(f"cannot write {str(self.path / name)!r}: {err.strerror or err}") from None

    def read_log(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            return []
        records = []
        for line in read_text(path, "run log").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return records

    def truncate_logs(self, global_step: int) -> None:
        """Drop log lines written after the checkpoint a resumed run starts from: in the step and
        evaluation logs and in every other `*.jsonl` of the run (predictions, the methods' records)."""
        others = sorted(p.name for p in self.path.glob("*.jsonl"))
        for name in dict.fromkeys(["train_log.jsonl", "evals.jsonl", *others]):
            kept = [r for r in self.read_log(name) if r.get("global_step", 0) <= global_step]
            atomic_write(self.path / name, "".join(json.dumps(r) + "\n" for r in kept))

    # --------------------------------------------------------- checkpoints
    def save_checkpoint(
        self,
        tag: str,
        model,
        optimizer,
        methods,
        progress: Progress,
        rng: dict,
        changed: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
        references=None,
    ) -> None:
        """Write the checkpoint `tag` whole, or remove what was written and raise one UserError line
        (e.g. on a full disk); the previous checkpoint stays the one a resume starts from. `changed`:
        on a pretrained base, the tensors that can differ from it and the base's reference (base.json),
        written instead of the whole model. `references` (lifelong.preference.References): DPO
        reference log-probs, if the run has any."""
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=".ckpt-"))
            if changed is None:
                save_model(model, str(tmp / "model.safetensors"))
            else:
                save_tensors_and_scalars(tmp / "trained", changed[0])
                write_json(tmp / BASE_FILE, changed[1])
            if optimizer is not None:
                save_tensors_and_scalars(tmp / "optimizer", flatten_optimizer(optimizer.state_dict()))
            for i, method in enumerate(methods):
                save_tensors_and_scalars(tmp / f"method-{i}", method.state_dict())
            if references is not None and (reference_state := references.state_dict()):
                save_tensors_and_scalars(tmp / "preference", reference_state)
            save_file(rng, str(tmp / "rng.safetensors"))
            write_json(tmp / "progress.json", asdict(progress))
        except BaseException as err:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, OSError | UserError) or type(err).__name__ == "SafetensorError":
                raise UserError(self.unsaved_message(tag, err)) from None
            raise
        self.ckpt_dir.mkdir(exist_ok=True)
        final = self.ckpt_dir / tag
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(self.ckpt_dir / "latest", tag + "\n")

    def prune_checkpoints(self, keep: int) -> None:
        """Keep every task-end checkpoint and the newest `keep` mid-task ones."""
        mid = sorted(p for p in self.ckpt_dir.glob("task-*-step-*") if p.is_dir())
        for old in mid[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def unsaved_message(self, tag: str, err: BaseException) -> str:
        reason = (err.strerror if isinstance(err, OSError) else None) or first_line(err)
        latest = self.latest_checkpoint()
        kept = (
            f"the checkpoint {latest.name} is kept: lifelong run --resume {self.path}"
            if latest
            else "no earlier checkpoint exists"
        )
        return f"cannot write checkpoint {tag} in {str(self.ckpt_dir)!r}: {reason}; {kept}"

    def checkpoints(self) -> list[Path]:
        """Every complete checkpoint, newest (furthest in the stream) first."""
        found = []
        for path in self.ckpt_dir.glob("*/progress.json"):
            try:
                progress = read_json(path)
                found.append(((progress["task"], progress["step"], path.stat().st_mtime), path.parent))
            except (UserError, KeyError, TypeError, OSError):
                continue  # unreadable: never a checkpoint to resume from
        return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint `latest` names, or the newest complete one if that one is incomplete."""
        pointer = self.ckpt_dir / "latest"
        if pointer.is_file():
            path = self.ckpt_dir / read_text(pointer, "checkpoint pointer").strip()
            if (path / "progress.json").is_file():
                return path
        found = self.checkpoints()
        return found[0] if found else None

    def load_checkpoint(
        self, path: Path, model, methods, references=None
    ) -> tuple[Progress, dict | None, dict]:
        """Restore the model's weights and the methods' states; return progress, optimizer state, rng.
        If `path` cannot be read, the newest older checkpoint that can is loaded, with a warning."""
        candidates = [path, *(p for p in self.checkpoints() if p != path)]
        errors: list[UserError] = []
        for ckpt in candidates:
            try:
                loaded = read_checkpoint(ckpt, model, methods, references)
            except UserError as err:
                errors.append(err)
                continue
            if errors:
                warn(f"{errors[0]}; resuming from the previous checkpoint, {ckpt.name}")
            return loaded
        raise UserError(f"{errors[0]}; no older checkpoint can be read (start a new run)")


def read_checkpoint(path: Path, model, methods, references=None) -> tuple[Progress, dict | None, dict]:
    weights = path / "model.safetensors"
    if weights.exists() or not (path / "trained.safetensors").exists():
        with reading(weights, "checkpoint file"):
            load_model(model, str(weights))
    else:
        from lifelong.models.delta import load_changed

        trained = path / "trained.safetensors"
        with reading(trained, "checkpoint file"):
            tensors = load_file(str(trained))
        if problem := load_changed(model, tensors):
            raise UserError(f"checkpoint file {str(trained)!r} {problem}")
    for i, method in enumerate(methods):
        method.load_state_dict(load_tensors_and_scalars(path / f"method-{i}"), model)
    if references is not None and (path / "preference.safetensors").exists():
        references.load_state_dict(load_tensors_and_scalars(path / "preference"))
    optimizer = None
    if (path / "optimizer.json").exists():
        optimizer = unflatten_optimizer(load_tensors_and_scalars(path / "optimizer"))
    try:
        progress = Progress(**read_json(path / "progress.json", "checkpoint file"))
    except TypeError as err:
        raise UserError(f"checkpoint file {str(path / 'progress.json')!r} is corrupt: {err}") from None
    with reading(path / "rng.safetensors", "checkpoint file"):
        rng = load_file(str(path / "rng.safetensors"))
    return progress, optimizer, rng


def config_yaml(cfg: RunConfig) -> str:
    """The resolved config as written to config.yaml. A pretrained model's `max_length` (None: its
    context is the model's own, recorded in summary.json) is left out rather than written as null."""
    data = cfg.model_dump(mode="json")
    if data["model"]["max_length"] is None:
        del data["model"]["max_length"]
    return yaml.safe_dump(data, sort_keys=False)


def check_base(path: Path, base: dict[str, Any] | None) -> None:
    """Refuse to resume from the checkpoint `path` on another base than the one it was trained on."""
    saved_file = path / BASE_FILE
    if base is None or not saved_file.is_file():
        return
    saved = read_json(saved_file, "checkpoint file")
    if saved != base:
        was, now = (f"{b.get('source')} {str(b.get('weights_hash'))[:12]}" for b in (saved, base))
        raise UserError(
            f"the base model changed since checkpoint {path.name} was written ({was} -> {now}); "
            "a checkpoint holds only what trained: resume on the same base weights"
        )


def saved_config_data(path: Path) -> dict[str, Any]:
    """The parsed config.yaml of a run directory, or a one-line UserError."""
    config = path / "config.yaml"
    if not config.is_file():
        raise UserError(f"{str(path)!r} is not a run directory (no config.yaml)")
    data = parse_yaml(read_text(config, "run config"), str(config))
    if not isinstance(data, dict):
        raise UserError(f"{str(config)!r} is not a run config (empty or not a mapping)")
    return data


def check_resumable(path: Path, saved: RunConfig, cfg: RunConfig) -> None:
    """Refuse a config for resuming `path` that changes a field other than RESUMABLE_FIELDS."""
    old, new = saved.model_dump(mode="json"), cfg.model_dump(mode="json")
    refused = [f for f in changed_fields(old, new) if not resumable(f)]
    if refused or cfg.config_hash() != saved.config_hash():
        field = refused[0] if refused else "a field"
        raise UserError(
            f"the config differs from the one run {str(path)!r} was started with in {field}, which changes "
            f"the numbers; resume without changing it, or start a new run "
            f"(fields a resume may change: {', '.join(sorted(RESUMABLE_FIELDS))})"
        )


def save_tensors_and_scalars(stem: Path, state: dict[str, Any]) -> None:
    """Tensors to `<stem>.safetensors`, everything else (JSON-able) to `<stem>.json`."""
    tensors, seen = {}, set()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            shared = value.untyped_storage().data_ptr() in seen  # e.g. tied embeddings
            seen.add(value.untyped_storage().data_ptr())
            tensors[key] = value.detach().clone() if shared else value.detach().contiguous()
    scalars = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    write_json(stem.with_suffix(".json"), scalars)


def load_tensors_and_scalars(stem: Path) -> dict[str, Any]:
    with reading(stem.with_suffix(".safetensors"), "checkpoint file"):
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    return tensors | read_json(stem.with_suffix(".json"), "checkpoint file")


def flatten_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"param_groups": state["param_groups"]}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            flat[f"state.{pid}.{key}"] = value
    return flat


def unflatten_optimizer(flat: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("state."):
            _, pid, slot = key.split(".", 2)
            state.setdefault(int(pid), {})[slot] = value
    return {"state": state, "param_groups": flat["param_groups"]}
