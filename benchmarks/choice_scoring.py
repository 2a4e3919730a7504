"""The cost of the `accuracy` metric (the label with the highest log-likelihood): scoring every
prompt x label row by a full forward (the per-row form, before) against reading each prompt once and
sharing its KV cache across the labels (`lifelong.evaluate.choice_logprobs`, after). Both score the
same rows on the same random model; the accuracies must be identical and the log-likelihoods agree.

Setup: the `small` preset (width 256, 4 layers) over a byte-level tokenizer, 128 prompts of about 60
bytes, 12 labels of 3-14 bytes (the shape of a topic-classification stream), eval batch 512 rows.

    .venv/bin/python benchmarks/choice_scoring.py            # the measurement (3 repeats)
    .venv/bin/python benchmarks/choice_scoring.py --quick    # a check: fewer prompts, 1 repeat
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import add_threads_option, apply_threads, header, median, print_table, quiet, result_line  # noqa: E402

from lifelong.evaluate import choice_logprobs, sequence_logprobs  # noqa: E402
from lifelong.models import build_preset, build_tokenizer  # noqa: E402

LABELS = ["people", "definitions", "computers", "politics", "science", "law", "food", "sports"]
LABELS += ["medicine", "art", "education", "work and money"]
WORDS = "the a of to and in is it that was for on are with as his they be at one have this from".split()


def per_row(model, prompts, choices, pad_id, batch_size):
    """Before: one full forward over every prompt + label row."""
    rows = [p + c for p in prompts for c in choices]
    starts = [len(p) for p in prompts for _ in choices]
    logprob, _ = sequence_logprobs(model, rows, starts, pad_id, batch_size)
    return logprob.view(len(prompts), len(choices))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 prompts, 1 repeat: check that it works")
    parser.add_argument("--repeats", type=int, default=None)
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    quiet()
    n_prompts, repeats = (32, 1) if args.quick else (128, args.repeats or 3)
    rng = random.Random(0)
    tok = build_tokenizer(None, ["<cls>"])
    prefix = tok.convert_tokens_to_ids(["<cls>"])
    texts = [" ".join(rng.choice(WORDS) for _ in range(18))[:60] + " topic: " for _ in range(n_prompts)]
    prompts = [prefix + ids for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    choices = [ids + [tok.eos_token_id] for ids in tok(LABELS, add_special_tokens=False)["input_ids"]]
    torch.manual_seed(0)
    model = build_preset("small", len(tok), 128).eval()
    header(f"choice_scoring: {n_prompts} prompts x {len(choices)} labels, {repeats} repeats")
    forms = {"per_row": per_row, "shared_cache": choice_logprobs}
    times: dict[str, list[float]] = {name: [] for name in forms}
    scores: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, fn in forms.items():  # an untimed warm-up of each
            scores[name] = fn(model, prompts[:8], choices, tok.pad_token_id, 512)
        for r in range(repeats):
            for name in list(forms)[:: 1 if r % 2 == 0 else -1]:  # the order flips every repeat
                start = time.perf_counter()
                scores[name] = forms[name](model, prompts, choices, tok.pad_token_id, 512)
                times[name].append(time.perf_counter() - start)
    before, after = scores["per_row"], scores["shared_cache"]
    assert before.argmax(-1).tolist() == after.argmax(-1).tolist(), "the chosen labels differ"
    gap = float((before - after).abs().max())
    rows = [[name, median(t), n_prompts / median(t)] for name, t in times.items()]
    print_table(["form", "median s", "prompts/s"], rows)
    speedup = median(times["per_row"]) / median(times["shared_cache"])
    result_line("choice_scoring", speedup=speedup, same_labels=True, max_logprob_gap=gap)


if __name__ == "__main__":
    main()
