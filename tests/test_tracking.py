"""The experiment trackers (`tracking: [tensorboard, mlflow, wandb]`): one tiny run logs to all three,
and each tracker's own reader finds every step's loss, every evaluation and the final metrics that the
run's train_log.jsonl, evals.jsonl and summary.json hold. W&B runs offline, MLflow in its default
store inside the run directory."""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest
import yaml

import lifelong
from lifelong.config import parse_config
from lifelong.loop import tracker_key
from lifelong.rundir import RunDir
from tests.conftest import small_config_dict

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")

TRACKERS = ["tensorboard", "mlflow", "wandb"]
# the W&B transaction log (.wandb): a 7-byte file header, then LevelDB-style 32 KiB blocks of records
# with a 7-byte header each (checksum, length, type); a record split across blocks is FIRST..LAST
WANDB_HEADER, WANDB_BLOCK, WANDB_FULL, WANDB_LAST = 7, 32768, 1, 4


def text_task(name: str, words: str) -> dict:
    """Scored by held-out loss: every evaluation has a score of its own (toy scores stay 0 this short)."""
    rows = [{"text": f"{words} {i}"} for i in range(12)]
    return {"name": name, "kind": "text", "train": {"examples": rows}, "eval": {"examples": rows[:4]}}


def tracked_config(tmp_path: Path, **changes):
    # "q&a" is no valid MLflow metric name: it is logged as eval/q_a
    stream = {"name": "text", "tasks": [text_task("first", "a b c"), text_task("q&a", "c b a")]}
    return parse_config(small_config_dict(tmp_path, stream=stream, tracking=TRACKERS, **changes))


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A finished run logged to every tracker with their defaults (records in the run directory)."""
    tmp = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as env:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_DIR"):
            env.delenv(name, raising=False)
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        return lifelong.run(tracked_config(tmp), show_progress=False).path


def expected_records(run: Path) -> dict[str, dict[int, float]]:
    """{metric name as logged: {step: value}} from the run's own files."""
    run_dir = RunDir(run)
    out: dict[str, dict[int, float]] = {"train/loss": {}}
    for record in run_dir.read_log("train_log.jsonl"):
        out["train/loss"][record["global_step"]] = record["loss"]
    tasks = json.loads((run / "matrix.json").read_text())["tasks"]
    for record in run_dir.read_log("evals.jsonl"):
        for name, score in zip(tasks, record["scores"], strict=True):
            out.setdefault(tracker_key(f"eval/{name}"), {})[record["global_step"]] = score
    summary = json.loads((run / "summary.json").read_text())
    last = max(out["train/loss"])
    for name, value in summary["metrics"].items():
        if value is not None:
            out[f"metrics/{name}"] = {last: value}
    out["metrics/train_seconds"] = {last: summary["train_seconds"]}
    return out


def check_logged(logged: dict[str, dict[int, float]], run: Path, rel: float) -> None:
    expected = expected_records(run)
    assert set(expected) <= set(logged), sorted(set(expected) - set(logged))
    assert "eval/q_a" in expected and len(expected["train/loss"]) == 12
    for name, values in expected.items():
        assert logged[name] == pytest.approx(values, rel=rel), name
    assert any(v != 0 for v in expected["eval/q_a"].values()) and expected["metrics/AA"]


def test_tensorboard_holds_every_step_evaluation_and_metric(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run / "tracking" / "lifelong"))
    acc.Reload()
    logged = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    check_logged(logged, tracked_run, rel=1e-6)  # TensorBoard keeps float32
    (hparams,) = (tracked_run / "tracking" / "lifelong").glob("*/hparams.yml")
    assert yaml.safe_load(hparams.read_text())["train.steps_per_task"] == 6


def mlflow_client(run: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{run / 'tracking' / 'mlflow.db'}")


def mlflow_runs(client, experiment: str = "lifelong"):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_mlflow_holds_every_step_evaluation_metric_and_the_config(tracked_run):
    client = mlflow_client(tracked_run)
    (run,) = mlflow_runs(client)
    assert run.info.run_name == tracked_run.name and run.info.status == "FINISHED"
    logged = {
        name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
        for name in run.data.metrics
    }
    check_logged(logged, tracked_run, rel=1e-12)
    assert run.data.params["train.steps_per_task"] == "6" and run.data.params["stream.tasks.1.name"] == "q&a"


def wandb_records(path: Path) -> list:
    """Every record of a W&B transaction log (`run-<id>.wandb`), parsed with W&B's own protobuf."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, part, records = path.read_bytes(), WANDB_HEADER, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = WANDB_BLOCK - pos % WANDB_BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero-filled tail
            pos += room
            continue
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (WANDB_FULL, WANDB_LAST):
            records.append(Record.FromString(part))
            part = b""
    return records


def wandb_log(run: Path) -> tuple[dict[str, dict[int, float]], dict[str, object], int]:
    """A W&B offline run's logged values {name: {step: value}}, its config and its exit code."""
    (path,) = (run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb")
    logged: dict[str, dict[int, float]] = {}
    config: dict[str, object] = {}
    exit_code = None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {
                i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json)
                for i in record.history.item
            }
            for name, value in items.items():
                logged.setdefault(name, {})[items["_step"]] = value
        elif kind == "config":
            config |= {u.key: json.loads(u.value_json) for u in record.config.update}
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return logged, config, exit_code


def test_wandb_offline_run_holds_every_step_evaluation_metric_and_the_config(tracked_run):
    logged, config, exit_code = wandb_log(tracked_run)
    check_logged(logged, tracked_run, rel=1e-12)
    assert config["train.steps_per_task"] == 6 and config["stream.tasks.1.name"] == "q&a"
    assert exit_code == 0


def test_a_stopped_run_closes_its_trackers_as_killed(tracked_run, tmp_path, monkeypatch):
    """Ctrl-C during training: the checkpoint is written, and the trackers are closed with the run
    marked killed (MLflow's status, W&B's exit code), not left running. MLFLOW_TRACKING_URI puts the
    run into another store (the first run's)."""
    import lifelong.train as train_module

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracked_run / 'tracking' / 'mlflow.db'}")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    real_log_step = train_module.Trainer.log_step

    def ctrl_c_at_step_3(self, t, step, *args):
        real_log_step(self, t, step, *args)
        if (t, step) == (0, 2):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_module.Trainer, "log_step", ctrl_c_at_step_3)
    with pytest.raises(train_module.Interrupted):
        lifelong.run(tracked_config(tmp_path, name="stopped"), show_progress=False)
    run = tmp_path / "runs" / "stopped"
    statuses = {r.info.run_name: r.info.status for r in mlflow_runs(mlflow_client(tracked_run))}
    assert statuses == {tracked_run.name: "FINISHED", "stopped": "KILLED"}
    assert not (run / "tracking" / "mlflow.db").exists()
    logged, _, exit_code = wandb_log(run)
    assert sorted(logged["train/loss"]) == [1, 2, 3] and exit_code == 255


def test_wandb_without_an_account_is_a_user_error_and_leaves_no_run(tmp_path, monkeypatch):
    import wandb

    from lifelong.errors import UserError

    wandb.teardown()  # W&B's settings of this process (an offline run above) as in a new one
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no stored login
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = parse_config(small_config_dict(tmp_path, tracking=["tensorboard", "wandb"]))
    with pytest.raises(UserError, match="WANDB_MODE=offline"):
        lifelong.run(cfg, show_progress=False)
    assert not (tmp_path / "runs" / "small").exists()
