"""Knowledge arriving as documents (`facts`): a task per batch of invented facts, some of which a
later task restates with a new value.

Every entity is made up (towns, countries, people and companies with generated names), so the base
model cannot know any fact before its document arrives. Built from the seed alone, deterministic.
A task brings:

- documents (`Task.documents`), one sentence each: "Quellin is the capital of Zorbia.", "Marta
  Ivensk founded Tolvar Systems in 1987.", "Tolvar Systems has its headquarters in Vessa.", ...
  A retrieval method stores them; `key` names the fact a document gives ("capital of Zorbia");
- training questions (two phrasings per fact, answered with the document's span) for the methods
  that fine-tune: "What is the capital of Zorbia?" -> "Quellin";
- held-out questions in a third phrasing, never trained on: "Which city is Zorbia's capital?",
  scored by `answer_contains` (the answer's words hold the span, as a chat model answers in a
  sentence).

Temporal facts: from the second task on, `n_updates` documents restate a fact of an earlier task with
a new value ("In 2022 the capital of Zorbia moved to Vessa.", same key). The updating task asks the
question again (its own training and held-out rows, with the new value), and the earlier task's
held-out question gets a `Revision`: from the updating task on it is right only with the new value.
So column j of the accuracy matrix is scored, after task k, against the newest value among the
documents of tasks 0..k: a method that keeps answering the old capital loses that question, one that
follows the newest document keeps it. Before the update arrives (and for the initial model) the old
value is the answer.

Rows are chat-formatted with no task token (a reader that trains nothing reads the rows as a chat
model would); suggested base: smollm2-135m-instruct. `lifelong run --stream facts --method
retrieval` trains nothing (the documents go to a faiss memory, top-k put before each question);
`naive` and `self_replay` fine-tune LoRA adapters on the training questions.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.instructions import INSTRUCT_MODEL, INSTRUCT_TRAIN
from lifelong.data.task import Document, Example, PromptFormat, Revision, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

# Chat rows, no task token; room for a few retrieved documents in front of a question.
FACTS_FORMAT = PromptFormat(chat=True, task_token=False, max_tokens=512)
# A question with its retrieved documents in front, in the user turn (the `retrieval` method's default)
CONTEXT_PROMPT = "Context:\n{context}\n\nQuestion: {question}"
WORD = re.compile(r"\w+")
FIRST_UPDATE_YEAR = 2021  # task k's updates happen in year FIRST_UPDATE_YEAR + k
CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
NAME_ENDINGS = {
    "country": ("ia", "and", "ora", "esh", "ovia"),
    "city": ("in", "a", "holm", "vik", "ton"),
    "first": ("a", "o", "en", "is"),
    "last": ("sk", "ov", "ard", "ic"),
    "company": (" Systems", " Industries", " Labs", " Works", " Foods"),
}


@dataclass(frozen=True)
class Relation:
    """A kind of fact: its document, two training phrasings and a held-out one of its question(s),
    and (if it can change) the document that restates it. `{s}` is the subject, `{v}` the value."""

    key: str  # "capital of {s}"
    document: str
    questions: tuple[tuple[str, str, str], ...]  # (train, train, held-out) per question
    update: str = ""  # "" : the fact never changes


RELATIONS = {
    "capital": Relation(
        "capital of {s}",
        "{v} is the capital of {s}.",
        (("What is the capital of {s}?", "Name the capital of {s}.", "Which city is {s}'s capital?"),),
        "In {year} the capital of {s} moved to {v}.",
    ),
    "headquarters": Relation(
        "headquarters of {s}",
        "{s} has its headquarters in {v}.",
        (
            (
                "Where is {s} headquartered?",
                "Where are the headquarters of {s}?",
                "In which city does {s} have its head office?",
            ),
        ),
        "In {year} {s} moved its headquarters to {v}.",
    ),
    "mayor": Relation(
        "mayor of {s}",
        "{v} is the mayor of {s}.",
        (("Who is the mayor of {s}?", "Name the mayor of {s}.", "Who leads the town of {s} as its mayor?"),),
        "In {year} {v} became the mayor of {s}.",
    ),
    "birthplace": Relation(
        "birthplace of {s}",
        "{s} was born in {v}.",
        (("Where was {s} born?", "In which town was {s} born?", "What is the birthplace of {s}?"),),
    ),
}
NONE = Relation("", "", ())
FOUNDING = (  # one document, two questions: "{v} founded {s} in {year}."
    "{v} founded {s} in {year}.",
    ("Who founded {s}?", "Who started the company {s}?", "Who is the founder of {s}?"),
    ("When was {s} founded?", "In which year was {s} started?", "In what year did {s} begin?"),
)


class Names:
    """Invented names, none used twice in a stream."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def stem(self, syllables: int) -> str:
        return "".join(self.rng.choice(CONSONANTS) + self.rng.choice(VOWELS) for _ in range(syllables))

    def __call__(self, kind: str) -> str:
        while True:
            if kind == "person":
                name = f"{self('first')} {self('last')}"
            else:
                name = self.stem(2).capitalize() + self.rng.choice(NAME_ENDINGS[kind])
            if name not in self.used:
                self.used.add(name)
                return name


@dataclass
class Fact:
    """A fact of a task: its document, its (train, train, held-out, answer) questions, and what an
    update needs (relation name, subject, value kind)."""

    document: Document
    questions: list[tuple[str, str, str, str]]
    relation: str = ""
    subject: str = ""


def relation_fact(name: str, subject: str, value: str) -> Fact:
    rel = RELATIONS[name]
    text = rel.document.format(s=subject, v=value)
    questions = [(*(q.format(s=subject) for q in qs), value) for qs in rel.questions]
    return Fact(Document(text, rel.key.format(s=subject)), questions, name, subject)


def group_facts(names: Names, rng: random.Random) -> list[Fact]:
    """Five documents on new entities: a country's capital, a company's founding and headquarters, a
    person's birthplace, a town's mayor."""
    country, capital, company = names("country"), names("city"), names("company")
    founder, seat, person, birthplace = names("person"), names("city"), names("person"), names("city")
    mayor, town = names("person"), names("city")
    year = str(rng.randint(1850, 2010))
    founding, who, when = FOUNDING
    founded = Fact(
        Document(founding.format(s=company, v=founder, year=year), f"founding of {company}"),
        [(*(q.format(s=company) for q in who), founder), (*(q.format(s=company) for q in when), year)],
    )
    return [
        relation_fact("capital", country, capital),
        founded,
        relation_fact("headquarters", company, seat),
        relation_fact("birthplace", person, birthplace),
        relation_fact("mayor", town, mayor),
    ]


def fact_batches(
    n_tasks: int, groups_per_task: int, n_updates: int, rng: random.Random
) -> tuple[list[list[Fact]], list[list[Revision]]]:
    """Each task's facts (its updates of earlier facts last) and each task's revisions (what later
    tasks restated of its held-out questions)."""
    names = Names(rng)
    batches: list[list[Fact]] = []
    revisions: list[list[Revision]] = []
    changeable: list[tuple[int, int]] = []  # (task, index of its fact) of a fact that can change
    for k in range(n_tasks):
        facts = [fact for _ in range(groups_per_task) for fact in group_facts(names, rng)]
        updates = rng.sample(changeable, min(n_updates, len(changeable))) if k else []
        for j, i in sorted(updates):
            changeable.remove((j, i))
            old = batches[j][i]
            value = names("person" if old.relation == "mayor" else "city")
            new = relation_fact(old.relation, old.subject, value)
            text = RELATIONS[old.relation].update.format(s=old.subject, v=value, year=FIRST_UPDATE_YEAR + k)
            new.document = Document(text, new.document.key)
            # the earlier task's held-out question about this fact: the new value from task k on
            eval_index = sum(len(f.questions) for f in batches[j][:i])
            revisions[j].append(Revision(eval_index, k, value))
            facts.append(new)
        batches.append(facts)
        revisions.append([])
        # an original fact changes at most once (an update is never restated: one revision per question)
        changeable += [
            (k, i)
            for i, f in enumerate(facts[: len(facts) - len(updates)])
            if RELATIONS.get(f.relation, NONE).update
        ]
    return batches, revisions


def facts_stream(n_tasks: int = 4, groups_per_task: int = 3, n_updates: int = 2, seed: int = 0) -> Stream:
    """Invented facts arriving as documents, a batch per task; later tasks restate earlier facts."""
    if n_tasks < 1 or groups_per_task < 1 or n_updates < 0:
        raise UserError("facts: n_tasks and groups_per_task must be >= 1, n_updates >= 0")
    rng = random.Random(derive_seed(seed, "facts"))
    batches, revisions = fact_batches(n_tasks, groups_per_task, n_updates, rng)
    tasks = []
    for k, (facts, revised) in enumerate(zip(batches, revisions, strict=True)):
        train = [Example(q, answer) for f in facts for a, b, _, answer in f.questions for q in (a, b)]
        held = [Example(q, answer) for f in facts for _, _, q, answer in f.questions]
        tasks.append(
            Task(
                name=f"facts{k + 1}",
                kind="prompt_target",
                train=train,
                eval=held,
                metric="answer_contains",
                token=f"<facts{k + 1}>",
                description=f"{len(facts)} documents, {len(held)} held-out questions",
                format=FACTS_FORMAT,
                documents=[f.document for f in facts],
                revisions=revised,
            )
        )
    return Stream(name="facts", tasks=tasks)


def with_context(question: str, docs: list[str], prompt: str = CONTEXT_PROMPT) -> str:
    """The question with its documents in front, as "- document" lines (none: the question alone)."""
    if not docs:
        return question
    return prompt.replace("{context}", "\n".join(f"- {d}" for d in docs)).replace("{question}", question)


FUNCTION_WORDS = frozenset(
    "a an and as at by did does for has have in is its of on the to was what when where which who".split()
)


def words(text: str) -> set[str]:
    """The content words of `text` (function words out: they would rank every document alike)."""
    return set(WORD.findall(text.casefold())) - FUNCTION_WORDS


def reading_context(
    question: str, gold: Document, live: list[Document], k: int, rng: random.Random
) -> list[str]:
    """`gold` and the `k - 1` live documents sharing the most words with the question (ties drawn at
    random), in a random order: what a retriever hands a reader, with the answer not always first."""
    others = [d for d in live if d is not gold]
    asked = words(question)
    ranked = sorted(others, key=lambda d: (-len(asked & words(d.text)), rng.random()))
    docs = [gold.text, *(d.text for d in ranked[: k - 1])]
    rng.shuffle(docs)
    return docs


def facts_reader_stream(
    n_tasks: int = 12,
    groups_per_task: int = 3,
    n_updates: int = 2,
    k: int = 3,
    held_out_tasks: int = 2,
    seed: int = 0,
) -> Stream:
    """Reading practice for a retrieval reader: questions on invented facts with their documents in front."""
    if k < 1 or not 0 < held_out_tasks < n_tasks:
        raise UserError("facts_reader: k must be >= 1 and 0 < held_out_tasks < n_tasks")
    # its own seed: other entities than the `facts` stream of the same seed
    rng = random.Random(derive_seed(seed, "facts_reader"))
    batches, _ = fact_batches(n_tasks, groups_per_task, n_updates, rng)
    train, held = [], []
    live: dict[str, Document] = {}  # key -> its newest document, as `retrieval` with recency newest
    for t, facts in enumerate(batches):
        live |= {f.document.key: f.document for f in facts}
        documents = list(live.values())
        for fact in facts:
            for *phrasings, answer in fact.questions:
                out = held if t >= n_tasks - held_out_tasks else train
                for q in phrasings[2:] if out is held else phrasings:
                    context = reading_context(q, fact.document, documents, k, rng)
                    out.append(Example(with_context(q, context), answer))
    task = Task(
        name="reader",
        kind="prompt_target",
        train=train,
        eval=held,
        metric="answer_contains",
        token="<reader>",
        description=f"{len(train)} questions with context, {len(held)} held out on other facts",
        format=FACTS_FORMAT,
    )
    return Stream(name="facts_reader", tasks=[task])


# naive / self_replay with LoRA on smollm2-135m-instruct, 2 CPU cores, two runs side by side: 60 steps
# of 4 rows a task at lr 1e-3, about six passes over its 36-40 training questions (at 24 steps and
# 5e-4 the held-out phrasing was never learnt: 0.00-0.10 right after arrival); every held-out
# question of a task is scored (at most 24). `retrieval` alone makes 0 steps whatever this says.
FACTS_TRAIN = {
    **INSTRUCT_TRAIN,
    "steps_per_task": 60,
    "lr": 1.0e-3,
    "checkpoint_every": 30,
    "eval_examples": 24,
    "eval_batch_size": 24,
}

register_stream(
    "facts",
    StreamInfo(
        facts_stream,
        source="generated: invented towns, countries, people and companies (seeded)",
        task_format="documents + a question on them -> the span that answers it",
        metric="answer_contains (a restated fact: its newest value)",
        model=INSTRUCT_MODEL,
        train=FACTS_TRAIN,
        adapter="lora:r=16:alpha=32",
    ),
)

# Reading practice, once before a `facts` run with `retrieval` (docs/scenarios.md): LoRA r=16 on
# smollm2-135m-instruct, about two passes over its ~560 questions.
FACTS_READER_TRAIN = {
    **INSTRUCT_TRAIN,
    "steps_per_task": 150,
    "batch_size": 8,
    "checkpoint_every": 50,
    "eval_examples": 40,
    "eval_batch_size": 20,
}

register_stream(
    "facts_reader",
    StreamInfo(
        facts_reader_stream,
        source="generated: invented facts as in `facts`, from another seed",
        task_format="a question with 3 documents in front (the answering one among distractors) -> its span",
        metric="answer_contains",
        model=INSTRUCT_MODEL,
        train=FACTS_READER_TRAIN,
        adapter="lora:r=16:alpha=32",
    ),
)
