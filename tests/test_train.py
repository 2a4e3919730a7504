"""The loop: reproducible numbers, the run directory's contents, the LR schedule, the NaN guard."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import lifelong
from lifelong.config import TrainConfig
from lifelong.data import build_stream
from lifelong.data.batching import BatchSchedule, encode_stream
from lifelong.losses import next_token_loss
from lifelong.models import load_for_run
from lifelong.seeding import seed_everything
from lifelong.train import lr_factor


def test_same_config_same_numbers(small_config):
    first = lifelong.run(small_config(name="a"), show_progress=False)
    second = lifelong.run(small_config(name="b"), show_progress=False)
    assert first.progress.matrix == second.progress.matrix
    assert first.progress.baseline == second.progress.baseline
    log = lambda r: [json.loads(x)["loss"] for x in (r.path / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert log(first) == log(second)


def test_run_directory_holds_results_and_pickle_free_checkpoints(small_config):
    result = lifelong.run(small_config(train={"eval_every": 2, "checkpoint_every": 3}), show_progress=False)
    path = result.path
    for name in (
        "config.yaml",
        "train_log.jsonl",
        "evals.jsonl",
        "matrix.json",
        "matrix.csv",
        "summary.json",
    ):
        assert (path / name).is_file(), name
    assert (path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    matrix = json.loads((path / "matrix.json").read_text())
    assert len(matrix["rows"]) == 2 and len(matrix["rows"][0]) == 2 and len(matrix["baseline"]) == 2
    summary = json.loads((path / "summary.json").read_text())
    assert set(summary["metrics"]) == {"AA", "AIA", "FGT", "BWT", "FWD"}
    assert summary["train_seconds"] > 0 and summary["eval_seconds"] > 0
    # after each task, plus mid-task ones (at step 3 of each 6-step task)
    tags = sorted(p.name for p in (path / "checkpoints").iterdir() if p.is_dir())
    assert tags == ["after-task-001", "after-task-002", "task-001-step-0000003", "task-002-step-0000003"]
    suffixes = {f.suffix for f in (path / "checkpoints").rglob("*") if f.is_file()}
    assert suffixes <= {".safetensors", ".json", ""}
    evals = [json.loads(x) for x in (path / "evals.jsonl").read_text().splitlines()]
    # initial model, steps 2 and 4 of each task, and each task's end
    assert [e["global_step"] for e in evals] == [0, 2, 4, 6, 8, 10, 12]
    steps = [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]
    assert [s["global_step"] for s in steps] == list(range(1, 13))
    assert all({"loss", "task", "lr", "tokens_per_s"} <= set(s) for s in steps)


def test_lr_schedule_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig(warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)
    mid = lr_factor(55, 100, cfg)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(50, 100, TrainConfig()) == 1.0


def test_optimizer_reset_and_rewarm_change_the_numbers(small_config):
    base = lifelong.run(small_config(name="reset"), show_progress=False)
    kept = lifelong.run(small_config(name="kept", train={"reset_optimizer": False}), show_progress=False)
    assert base.progress.matrix[0] == kept.progress.matrix[0]  # task 1 is identical
    # Adam's moments carried over from task 1 change task 2's updates (its first loss is the same)
    assert _losses(base)[:7] == _losses(kept)[:7]
    assert _losses(base)[7] != _losses(kept)[7]  # the second update of task 2 reads the moments


def _losses(result) -> list[float]:
    return [json.loads(x)["loss"] for x in (result.path / "train_log.jsonl").read_text().splitlines()]


def test_divergence_stops_the_task_with_a_clear_message(tmp_path, write_config, monkeypatch, capsys):
    from lifelong.cli import main
    from tests.conftest import small_config_dict

    data = small_config_dict(tmp_path, train={"lr": 1e30, "grad_clip": None, "steps_per_task": 20})
    monkeypatch.setattr(sys, "argv", ["lifelong", "run", str(write_config(data))])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "diverged: the loss became" in err and "Traceback" not in err
    assert "no checkpoint was written yet" in err and "checkpoint is kept" not in err  # none exists


def test_float16_on_a_cpu_is_refused_before_training(tmp_path, write_config, monkeypatch, capsys):
    """float16 matmuls overflow on a CPU and the loss turns NaN: one line naming the dtype, exit 2."""
    from lifelong.cli import main
    from tests.conftest import small_config_dict

    data = small_config_dict(tmp_path)
    data["model"] = {**data["model"], "dtype": "float16"}
    monkeypatch.setattr(sys, "argv", ["lifelong", "run", str(write_config(data))])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "float16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "small").exists()  # a run that fails to start leaves nothing


def test_target_only_loss_reads_fewer_tokens(small_config):
    """`loss_on: target` counts the answer tokens only (and the eos), `sequence` every token after the
    task prefix; the first logged loss of each run is the initial model's mean over exactly those."""
    cfg = small_config()
    stream = build_stream(cfg.stream, cfg.seed)
    seed_everything(cfg.seed)  # as the run does before it builds the model
    model, tokenizer, max_length, _, _ = load_for_run(cfg.model, stream)
    data = encode_stream(stream, tokenizer, max_length).tasks[0].train
    rows = BatchSchedule(len(data), cfg.train.batch_size, cfg.seed, 0).rows(0)
    counted = {}
    for loss_on in ("sequence", "target"):
        batch = data.batch(rows, loss_on)
        counted[loss_on] = int(batch.loss_mask.sum())
        lengths, starts = data.lengths[rows], data.target_start[rows]
        first = starts if loss_on == "target" else torch.full_like(starts, data.prefix_len)
        assert counted[loss_on] == int((lengths - first).sum())
    assert 0 < counted["target"] < counted["sequence"]
    for loss_on in ("sequence", "target"):
        result = lifelong.run(small_config(name=loss_on, train={"loss_on": loss_on}), show_progress=False)
        first_loss = json.loads((result.path / "train_log.jsonl").read_text().splitlines()[0])["loss_task"]
        batch = data.batch(rows, loss_on)
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        token_loss, mask = next_token_loss(logits, batch.input_ids, batch.loss_mask)
        assert int(mask.sum()) == counted[loss_on]
        assert first_loss == pytest.approx(float(token_loss.sum() / mask.sum()), rel=1e-4)


def test_tensorboard_tracking_writes_event_files(small_config):
    pytest.importorskip("tensorboard")
    result = lifelong.run(small_config(tracking=["tensorboard"]), show_progress=False)
    events = list((result.path / "tracking").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "eval/reverse" in tags and "metrics/AA" in tags
    assert len(acc.Scalars("train/loss")) == 12


def test_missing_tracker_package_is_a_user_error(small_config, monkeypatch):
    import importlib.util

    from lifelong.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError, match="pip install wandb"):
        lifelong.run(small_config(tracking=["wandb"]), show_progress=False)


@pytest.mark.parametrize("loss", ["ntp", "kl"])
def test_rows_of_different_widths_in_separate_passes_give_the_same_step(small_config, monkeypatch, loss):
    """Replay rows wider than the task rows get their own forward pass; the losses and the update
    equal those of one padded pass."""
    import lifelong.train as train_module
    from lifelong.data.batching import Batch
    from lifelong.methods.replay import frozen_copy
    from lifelong.rundir import RunDir

    def one_step(groups_fn, name):
        monkeypatch.setattr(train_module, "forward_groups", groups_fn)
        cfg = small_config(name=name, methods=[{"name": "replay", "loss": loss}])
        trainer = train_module.Trainer(cfg, RunDir.create(cfg), show_progress=False)
        trainer.methods[0].teacher = frozen_copy(trainer.raw)
        trainer.optimizer = trainer.new_optimizer()
        task_rows = trainer.data.tasks[0].train.batch(torch.arange(8))  # reverse: short rows
        wide = trainer.data.tasks[1].train.batch(torch.arange(4))  # add: longer rows
        pad = torch.zeros((4, 3), dtype=torch.long)
        replay = Batch(  # trailing padding that no row attends to is trimmed before the pass
            torch.cat([wide.input_ids, pad], 1),
            torch.cat([wide.attention_mask, pad], 1),
            torch.cat([wide.loss_mask, pad.bool()], 1),
        )
        assert replay.input_ids.shape[1] > task_rows.input_ids.shape[1]
        terms = trainer.step(task_rows, [replay])
        return terms, [p.detach().clone() for p in trainer.raw.parameters()]

    passes = []
    split, split_params = one_step(
        lambda parts: (passes.append(len(parts)), [[i] for i in range(len(parts))])[1], "split"
    )
    joint, joint_params = one_step(lambda parts: [list(range(len(parts)))], "joint")
    assert passes == [2]
    assert split.keys() == joint.keys()
    for key in split:
        assert split[key] == pytest.approx(joint[key], rel=1e-5, abs=1e-6)
    for a, b in zip(split_params, joint_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_resuming_a_finished_run_returns_it_and_writes_nothing(small_config):
    result = lifelong.run(small_config(), show_progress=False)
    files = lambda: {p: p.read_bytes() for p in result.path.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    again = lifelong.resume(result.path, show_progress=False)
    assert files() == before
    assert again.progress.matrix == result.progress.matrix and again.task_names == result.task_names


def test_a_diverged_score_is_kept_apart_from_an_undefined_metric(small_config, monkeypatch, capsys):
    """A NaN score is written as "nan" with a `diverged` entry and a warning, and the metrics it enters
    are "nan"; an undefined metric (forgetting with one task) stays null."""
    import lifelong.train as train_module

    real = train_module.evaluate_stream
    calls = []

    def nan_on_the_last(*args, **kwargs):
        scores = real(*args, **kwargs)
        calls.append(1)
        return [math.nan, *scores[1:]] if len(calls) == 3 else scores  # the row after the 2nd task

    monkeypatch.setattr(train_module, "evaluate_stream", nan_on_the_last)
    result = lifelong.run(small_config(), show_progress=False)
    assert "diverged" in capsys.readouterr().err

    def strict(path):  # standard JSON: no NaN token
        return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path.name}: {c}"))

    matrix, summary = strict(result.path / "matrix.json"), strict(result.path / "summary.json")
    assert matrix["rows"][1][0] == "nan" and matrix["diverged"] == [
        {"after_task": 1, "task": "reverse", "score": "nan"}
    ]
    assert summary["metrics"]["FGT"] == "nan" and summary["metrics"]["AA"] == "nan"
    for line in (result.path / "evals.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(c))
    one_task = lifelong.summary([[0.5]], [0.1])
    assert one_task["FGT"] is None and one_task["BWT"] is None and one_task["AA"] == 0.5
