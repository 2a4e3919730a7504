"""A run's trained model as a plain Hugging Face model directory (`lifelong export`).

    lifelong export runs/facts_reader-naive+lora --name facts-reader   # into the model cache
    lifelong export runs/my-run --to exported/my-model                 # anywhere

The model is rebuilt as the run built it, its newest checkpoint is loaded (the last task's end for a
finished run), LoRA adapters are merged into the weights (each LoRA layer into its base layer), and
the result is written with `save_pretrained` (safetensors) next to the tokenizer and `export.json`
(the run, the checkpoint, the config hash). A model named into the cache is then a base like any other:
`model: {base: facts-reader}`. A method whose knowledge is not in plain weights (a codebook, routed
adapters, a prompt, an external memory) cannot be exported this way and is refused in one line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lifelong.errors import UserError
from lifelong.rundir import RunDir, check_base, saved_config_data, warn, write_json

EXPORT_FILE = "export.json"


def export_run(
    run_path: Path, name: str | None = None, to: Path | None = None, cache: Path | None = None
) -> Path:
    """Write the run's model to the cache as `name`, or to the directory `to`; return where."""
    from lifelong.config import parse_config
    from lifelong.models import no_progress_bars
    from lifelong.models.cache import check_name, model_dir

    if (name is None) == (to is None):
        raise UserError("export needs one destination: --name NAME (the model cache) or --to DIR")
    try:
        dest = model_dir(check_name(name), cache) if name is not None else Path(to)
    except ValueError as err:
        raise UserError(str(err)) from None
    if dest.exists():
        raise UserError(f"{str(dest)!r} exists already: remove it or choose another destination")
    run = RunDir(Path(run_path))
    cfg = parse_config(saved_config_data(run.path), str(run.path / "config.yaml"))
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        raise UserError(f"{str(run.path)!r} holds no checkpoint yet: there is no trained model to export")
    model, tokenizer, progress = restored(cfg, run, ckpt)
    model = merged(model)
    if not run.finished:
        warn(f"the run is not finished: exporting its newest checkpoint, {ckpt.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with no_progress_bars():
            model.save_pretrained(str(tmp))  # config.json + model.safetensors
        tokenizer.save_pretrained(str(tmp))
        info = {
            "run": str(run.path.resolve()),
            "checkpoint": ckpt.name,
            "tasks_done": progress.task,
            "config_hash": progress.config_hash,
            "methods": [m.name for m in cfg.methods],
            "params": sum(p.numel() for p in model.parameters()),
            "base": cfg.model.model_dump(mode="json"),
        }
        write_json(tmp / EXPORT_FILE, info)
        tmp.chmod(0o755)
        os.replace(tmp, dest)
    except OSError as err:  # a full disk, a permission: nothing half-written stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write {str(dest)!r}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def restored(cfg, run: RunDir, ckpt: Path):
    """The run's model as the run built it with the checkpoint loaded, its tokenizer, its progress."""
    from lifelong.methods.registry import method_entry
    from lifelong.train import Trainer

    for method in cfg.methods:
        if not method_entry(method.name).method_cls.compatibility.exports:
            raise UserError(
                f"method {method.name} keeps what it learns outside plain weights (weights routed by task, "
                "a prompt, added modules, a codebook or a memory): it cannot be exported as plain weights"
            )
    cfg = cfg.model_copy(update={"progress": False, "tracking": []})
    trainer = Trainer(cfg, run, resume=True, show_progress=False)
    check_base(ckpt, trainer.base)
    progress, _, _ = run.load_checkpoint(ckpt, trainer.raw, trainer.methods, trainer.references)
    return trainer.raw, trainer.tokenizer, progress


def merged(model):
    """The model with its LoRA layers merged into the base weights and replaced by them (PEFT's
    `merge_and_unload` for a `PeftModel`; layers injected by `inject_adapter_in_model` one by one)."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]:
        layer.merge()  # the active adapters into the base layer's weight
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    if hasattr(model, "peft_config"):  # else save_pretrained would write an adapter, not the model
        del model.peft_config
    return model
