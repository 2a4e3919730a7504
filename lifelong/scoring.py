"""Scores of generated text against references, each in [0, 1], higher is better.

- `chrf`, `bleu`: corpus chrF and BLEU (sacrebleu, its default settings), divided by 100;
- `entity_f1`: entity-level F1 (seqeval) of entity lists written as `type: span; type: span`, placed
  as BIO tags on the words of the source sentence. A predicted entity that is not in the sentence
  cannot be tagged there: it gets a position of its own (predicted B-type, gold O), so it still
  counts as a false positive.

Evaluation greedily generates each target (lifelong/evaluate.py), decodes it and calls one of these.
"""

from __future__ import annotations

from collections.abc import Callable

NO_ENTITY = "none"  # the target of a sentence without entities of the task's types
ENTITY_SEP, TYPE_SEP = ";", ":"


def chrf(predictions: list[str], references: list[str], sources: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(predictions, [references]).score / 100


def bleu(predictions: list[str], references: list[str], sources: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score / 100


def format_entities(entities: list[tuple[str, str]]) -> str:
    """The target text of a sentence's entities: `athlete: Serena Williams; team: Chicago Bulls`."""
    return f"{ENTITY_SEP} ".join(f"{kind}{TYPE_SEP} {span}" for kind, span in entities) or NO_ENTITY


def parse_entities(text: str) -> list[tuple[str, str]]:
    """(type, span) pairs of `format_entities` text; malformed parts are dropped."""
    out = []
    for part in text.split(ENTITY_SEP):
        kind, sep, span = part.partition(TYPE_SEP)
        if sep and kind.strip() and span.strip():
            out.append((kind.strip(), " ".join(span.split())))
    return out


def bio_tags(words: list[str], entities: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """BIO tags of `entities` placed on `words` (first free occurrence of each span), and the types
    of the entities that could not be placed."""
    tags, unplaced = ["O"] * len(words), []
    for kind, span in entities:
        span_words = span.split()
        n = len(span_words)
        at = next(
            (
                i
                for i in range(len(words) - n + 1)
                if words[i : i + n] == span_words and all(t == "O" for t in tags[i : i + n])
            ),
            None,
        )
        if at is None:
            unplaced.append(kind)
            continue
        tags[at : at + n] = [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)
    return tags, unplaced


def entity_f1(predictions: list[str], references: list[str], sources: list[str]) -> float:
    from seqeval.metrics import f1_score

    gold_seqs, pred_seqs = [], []
    for pred, ref, source in zip(predictions, references, sources, strict=True):
        words = source.split()
        gold, _ = bio_tags(words, parse_entities(ref))
        tagged, unplaced = bio_tags(words, parse_entities(pred))
        gold_seqs.append(gold + ["O"] * len(unplaced))
        pred_seqs.append(tagged + [f"B-{kind}" for kind in unplaced])
    if not any(t != "O" for seq in gold_seqs + pred_seqs for t in seq):
        return 1.0  # nothing to find and nothing found
    return float(f1_score(gold_seqs, pred_seqs, zero_division=0))


# metric name -> scorer(predictions, references, sources)
TEXT_METRICS: dict[str, Callable[[list[str], list[str], list[str]], float]] = {
    "chrf": chrf,
    "bleu": bleu,
    "entity_f1": entity_f1,
}
