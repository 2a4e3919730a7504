"""`lifelong pretrain`: the BPE tokenizer, packed rows, the loop, resume, the model cache and loading a
cached base model in a run. Tiny corpora written to tmp_path, a 1-layer model, one thread."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import lifelong
from lifelong.cli import main
from lifelong.config import builtin_configs, parse_config
from lifelong.data.packing import pack
from lifelong.errors import UserError
from lifelong.models import cache
from lifelong.pretrain import (
    PretrainConfig,
    Pretrainer,
    PretrainInterrupted,
    builtin_pretrain_configs,
    not_padding,
    pretrain,
    train_tokenizer,
)
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli

WORDS = "the a cat dog bird sat ran sang on under near mat tree house red old small and then slowly".split()


def write_corpus(path, n_docs=120, seed=0):
    """Documents of a few short sentences, separated by blank lines."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(3)]
        docs.append(". ".join(s.capitalize() for s in sentences) + ".")
    path.write_text("\n\n".join(docs) + "\n")
    return path


def tiny_config(tmp_path, name="tiny-base", **train):
    corpus = tmp_path / "stories.txt"
    if not corpus.exists():
        write_corpus(corpus)
    return {
        "name": name,
        "sources": [{"corpus": f"file:{corpus}"}],
        "tokenizer": {"vocab_size": 320},
        "model": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "max_length": 32,
        },
        "train": {
            "tokens_per_parameter": 2.0,  # 161 steps of 8 x 32 tokens
            "batch_size": 8,
            "lr": 3e-3,
            "warmup_steps": 5,
            "eval_every": 20,
            "checkpoint_every": 30,
            "eval_fraction": 0.1,
            "threads": 1,
            **train,
        },
    }


@pytest.fixture(autouse=True)
def keep_thread_count():
    """`train.threads: 1` (fast on a busy machine) must not leak into other tests' numbers."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_tokenizer_round_trips_text_and_keeps_source_tokens_whole():
    texts = ["The cat sat on the mat.", "Ünïcödé and émojis 🙂 survive byte-level BPE.\n\tTabs too."]
    specials = ["<pad>", "</s>", "<unk>", "<stories>"]
    tok = train_tokenizer(texts * 20, 300, specials)
    assert [tok.convert_tokens_to_ids(t) for t in specials] == [0, 1, 2, 3]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.unk_token_id not in ids
    ids = tok("<stories>The cat", add_special_tokens=False)["input_ids"]
    assert ids[0] == 3 and tok.decode(ids[1:]) == "The cat"
    again = train_tokenizer(texts * 20, 300, specials)
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()  # deterministic


def test_pack_rows_start_with_the_source_token():
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]  # + EOS each: a stream of 12 tokens
    rows = pack(docs, source_id=3, eos_id=1, length=5)  # windows of 4: 3 full rows
    assert rows.tolist() == [[3, 5, 6, 7, 1], [3, 8, 1, 9, 10], [3, 11, 12, 13, 1]]
    padded = pack(docs[:2], source_id=3, eos_id=1, length=5, pad_id=0)
    assert padded.tolist() == [[3, 5, 6, 7, 1], [3, 8, 1, 0, 0]]
    mask = not_padding(padded.long(), pad_id=0)[:, 1:]  # which next tokens the held-out loss counts
    assert mask.tolist() == [[True, True, True, True], [True, True, False, False]]


def test_rows_of_two_sources_each_start_with_their_token(tmp_path, home):
    data = tiny_config(tmp_path)
    other = write_corpus(tmp_path / "poems.jsonl", n_docs=40, seed=1)
    other.write_text("".join(json.dumps({"text": d}) + "\n" for d in other.read_text().split("\n\n")))
    data["sources"].append({"corpus": f"file:{other}", "token": "<verse>"})
    trainer = Pretrainer(PretrainConfig.model_validate(data), show_progress=False)
    for name, token in (("stories", "<stories>"), ("poems", "<verse>")):
        token_id = trainer.tokenizer.convert_tokens_to_ids(token)
        assert trainer.rows[name].shape[1] == 32
        assert (trainer.rows[name][:, 0] == token_id).all()
        assert (trainer.rows[name][:, 1:] != token_id).all()
        assert (trainer.eval_rows[name][:, 0] == token_id).all()
    assert len(trainer.train_rows) == len(trainer.rows["stories"]) + len(trainer.rows["poems"])
    batch = trainer.order.rows(0)
    assert len(batch) == 8 and len(set(batch.tolist())) == 8


def test_pretraining_lowers_the_loss_and_fills_the_cache(tmp_path, home):
    path = pretrain(PretrainConfig.model_validate(tiny_config(tmp_path)), show_progress=False)
    assert path == home / "tiny-base" == cache.cached_model_path("tiny-base")
    assert not (home / "tiny-base.work").exists()  # checkpoints are removed once the model is made
    assert {"config.json", "model.safetensors", "tokenizer.json", "pretrain.json"} <= {
        p.name for p in path.iterdir()
    }
    info = json.loads((path / "pretrain.json").read_text())
    losses = [json.loads(line)["loss"] for line in (path / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == info["steps"] == math.ceil(2.0 * info["params"] / (8 * 32))
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.5
    assert info["held_out_loss"]["stories"] < math.log(320) - 2.5
    assert info["tokens"] == info["steps"] * 8 * 32 and info["tokens_per_s"] > 0

    [listed] = cache.list_cached()
    assert (listed.name, listed.params, listed.tokens) == ("tiny-base", info["params"], info["tokens"])

    # a run config names the cached model; its task tokens are added to the vocabulary
    run_cfg = small_config_dict(tmp_path, train={"steps_per_task": 2})
    run_cfg["model"] = {"base": "tiny-base"}
    result = lifelong.run(parse_config(run_cfg), show_progress=False)
    assert len(result.progress.matrix) == 2


def test_models_command_lists_the_cache(tmp_path, home, monkeypatch, capsys):
    pretrain(
        PretrainConfig.model_validate(tiny_config(tmp_path, tokens_per_parameter=0.1)), show_progress=False
    )
    monkeypatch.setattr(sys, "argv", ["lifelong", "models"])
    main()
    out = capsys.readouterr().out
    assert str(home) in out and "tiny-base" in out and "held-out loss stories" in out


def test_interrupted_pretraining_resumes_to_the_same_numbers(tmp_path, home):
    whole = pretrain(PretrainConfig.model_validate(tiny_config(tmp_path, name="whole")), show_progress=False)
    cfg = PretrainConfig.model_validate(tiny_config(tmp_path, name="parts"))
    with pytest.raises(PretrainInterrupted):
        Pretrainer(cfg, show_progress=False).train(stop_after=47)  # not on a checkpoint or eval step
    work = home / "parts.work"
    assert (work / "checkpoints" / "step-0000047" / "model.safetensors").is_file()
    assert not list(work.rglob("*.pt")) and not list(work.rglob("*.bin"))  # no pickle
    with pytest.raises(PretrainInterrupted):  # a second session, to a checkpoint and past it
        Pretrainer(cfg, show_progress=False).train(stop_after=100)
    parts = Pretrainer(cfg, show_progress=False).train()

    def log(path, name):
        return [json.loads(line) for line in (path / name).read_text().splitlines()]

    for name in ("train_log.jsonl", "evals.jsonl"):
        strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log(whole, name)]
        assert [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in log(parts, name)] == strip
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(parts / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = [json.loads((p / "pretrain.json").read_text()) for p in (whole, parts)]
    assert info[0]["held_out_loss"] == info[1]["held_out_loss"]


def test_same_config_again_is_a_no_op_and_another_is_refused(tmp_path, home):
    cfg = PretrainConfig.model_validate(tiny_config(tmp_path, tokens_per_parameter=0.1))
    path = pretrain(cfg, show_progress=False)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert pretrain(cfg, show_progress=False) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="already in the cache"):
        pretrain(PretrainConfig.model_validate(tiny_config(tmp_path, lr=1e-3)), show_progress=False)


def test_changed_config_on_resume_is_one_line_exit_2(tmp_path, home, write_config, monkeypatch, capsys):
    data = tiny_config(tmp_path)
    with pytest.raises(PretrainInterrupted):
        Pretrainer(PretrainConfig.model_validate(data), show_progress=False).train(stop_after=3)
    path = write_config(data, "pretrain.yaml")
    args = ["pretrain", str(path), "--no-progress", "--set", "train.lr=0.01"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, "differs", "tiny-base.work")
    # fields that change no weight may change
    code, err = run_cli(
        ["pretrain", str(path), "--no-progress", "--set", "train.eval_every=7"], monkeypatch, capsys
    )
    assert code == 0, err
    assert cache.cached_model_path("tiny-base") is not None


def test_unknown_corpus_is_one_line_exit_2(tmp_path, home, write_config, monkeypatch, capsys):
    data = tiny_config(tmp_path)
    data["sources"] = [{"corpus": "klingon-epics"}]
    code, err = run_cli(["pretrain", str(write_config(data)), "--no-progress"], monkeypatch, capsys)
    assert_one_line_error(code, err, "sources.0", "unknown corpus 'klingon-epics'")
    code, err = run_cli(["pretrain", str(tmp_path / "missing.yaml")], monkeypatch, capsys)
    assert_one_line_error(code, err, "not found", "en-tiny")


def test_missing_base_model_says_how_to_make_it(tmp_path, home, write_config, monkeypatch, capsys):
    with pytest.raises(UserError, match="not in the model cache"):
        cache.require_cached("nothing-here")
    data = small_config_dict(tmp_path)
    data["model"] = {"base": "en-tiny"}
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "'en-tiny' is not in the model cache", "run: lifelong pretrain en-tiny")


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFELONG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "lifelong" / "models"
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere" / "models"
    assert cache.cache_dir(tmp_path / "given") == tmp_path / "given"


def test_builtin_pretrain_configs_are_listed_apart_from_run_configs():
    assert "en-tiny" in builtin_pretrain_configs()
    assert not [name for name in builtin_configs() if name.startswith("pretrain")]


def test_divergence_is_a_clear_error(tmp_path, home, write_config, monkeypatch, capsys):
    path = write_config(tiny_config(tmp_path, lr=1e4, grad_clip=None, warmup_steps=0))
    code, err = run_cli(["pretrain", str(path), "--no-progress"], monkeypatch, capsys)
    assert code == 1 and "diverged: the loss became nan" in err


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tmp_path, write_config):
    path = write_config(tiny_config(tmp_path, tokens_per_parameter=200.0, checkpoint_every=None))
    env = {**os.environ, "LIFELONG_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "lifelong.cli", "pretrain", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "home" / "models" / "tiny-base.work" / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (
        f"continue with: lifelong pretrain {path} --no-progress" not in err
    )  # --no-progress is not repeated
    assert f"continue with: lifelong pretrain {path}" in err
    steps = len(log.read_text().splitlines())
    assert (log.parent / "checkpoints" / f"step-{steps:07d}" / "model.safetensors").is_file()


def test_changed_config_before_any_checkpoint_starts_over(tmp_path, home):
    Pretrainer(PretrainConfig.model_validate(tiny_config(tmp_path)), show_progress=False)  # then a crash
    changed = Pretrainer(PretrainConfig.model_validate(tiny_config(tmp_path, lr=1e-3)), show_progress=False)
    saved = json.loads((home / "tiny-base.work" / "config.json").read_text())
    assert saved["config"]["train"]["lr"] == 1e-3 and changed.progress.step == 0


def test_piped_output_has_a_line_per_held_out_evaluation(tmp_path, write_config):
    path = write_config(tiny_config(tmp_path, tokens_per_parameter=0.5, eval_every=10))  # 41 steps
    env = {**os.environ, "LIFELONG_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "lifelong.cli", "pretrain", str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = re.compile(
        r"^tiny-base: step (\d+)/(\d+) loss \d+\.\d{3} scores stories \d+\.\d{3} elapsed \dm\d\ds$"
    )
    found = [m for text in done.stdout.splitlines() if (m := line.match(text))]
    total = int(found[-1].group(2))
    assert [int(m.group(1)) for m in found] == [*range(10, total, 10), total]  # every eval_every, the end
    evals = (tmp_path / "home" / "models" / "tiny-base" / "evals.jsonl").read_text().splitlines()
    assert len(evals) == len(found)
    last = json.loads(evals[-1])["held_out_loss"]["stories"]
    assert f" scores stories {last:.3f} elapsed " in found[-1].group(0)  # the final held-out loss
