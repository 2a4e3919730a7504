"""Prompt templates, chat-formatted rows and length clipping (lifelong/data/render.py): the built-in
streams' rows pinned, templates and their layering, ChatML rendering on a tiny tokenizer, the loss on
the assistant turn, the stop at the end of turn, messages rows, and O-LoRA-format rows that overflow."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.data import build_stream
from lifelong.data.batching import encode_stream, encode_task
from lifelong.data.loaders import load_examples
from lifelong.data.render import cut_text
from lifelong.data.scenarios.benchmarks import CLASSIFICATION_SETS, text_cls_benchmark_stream
from lifelong.data.spec import DataSource, RowFormat, StreamConfig, TemplateSpec, prompt_format
from lifelong.data.task import Example, PromptFormat, Task, Template
from lifelong.errors import UserError
from lifelong.models import build_tokenizer

# SmolLM2's ChatML template, shortened: a default system turn unless the conversation has one.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nBe kind.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def chat_tokenizer(task_tokens=()):
    tok = build_tokenizer(None, [*CHAT_TOKENS, *task_tokens])
    tok.chat_template = CHATML
    return tok


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def rows_of(es):
    return [es.ids[i, : es.lengths[i]].tolist() for i in range(len(es))]


def digest(cfg: dict, max_length: int) -> str:
    """A hash of every encoded row, target start, prefix and label of a stream (byte-level tokenizer)."""
    stream = build_stream(StreamConfig.model_validate(cfg), 0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    enc = encode_stream(stream, tok, max_length)
    h = hashlib.sha256()
    for t in enc.tasks:
        h.update(repr(t.prefix).encode())
        for s in (t.train, t.eval):
            for i in range(len(s)):
                h.update(repr(s.ids[i, : s.lengths[i]].tolist()).encode())
                h.update(repr(int(s.target_start[i])).encode())
        h.update(repr(t.choices).encode())
    h.update(repr((enc.eos_id, enc.pad_id, enc.max_len, enc.prefix_len)).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ built-in rows unchanged


@pytest.mark.parametrize(
    ("cfg", "max_length", "expected"),
    [  # measured on main at 47b93bb, before templates existed
        ({"builtin": "toy"}, 16, "ec9ae9174a88cbf5"),
        ({"builtin": "classification", "options": {"n_train": 20, "n_eval": 5}}, 128, "0550ef1495c4bdba"),
    ],
)
def test_builtin_streams_encode_to_the_rows_they_always_had(cfg, max_length, expected):
    assert digest(cfg, max_length) == expected


# ------------------------------------------------------------------ templates


def user_stream(tasks, **stream):
    return build_stream(StreamConfig.model_validate({"tasks": tasks, **stream}), 0)


def qa_task(**fields):
    rows = [{"prompt": "2+2=", "target": "4"}, {"prompt": "3+3=", "target": "6"}]
    return {"name": "qa", "train": {"examples": rows}, "eval": {"examples": rows[:1]}, **fields}


def test_user_tasks_get_an_answer_cue_and_the_target_starts_at_the_answer():
    (task,) = user_stream([qa_task()]).tasks
    assert task.format.template == Template(answer_cue="\nAnswer:", target_prefix=" ")
    tok = build_tokenizer(None, ["<qa>"])
    enc = encode_task(task, tok, 64)
    (first, _) = rows_of(enc.train)
    prompt, target = ids(tok, "2+2=\nAnswer:"), ids(tok, " 4")
    assert first == [tok.convert_tokens_to_ids("<qa>"), *prompt, *target, tok.eos_token_id]
    assert int(enc.train.target_start[0]) == 1 + len(prompt)
    assert tok.decode(enc.train.targets(1)[0], skip_special_tokens=True) == " 4"


def test_template_off_keeps_the_prompt_and_a_stream_template_fills_tasks_without_one():
    own = {"instruction": "Add.", "input_prefix": "Sum: ", "answer_cue": " ="}
    stream = user_stream(
        [qa_task(template=False), {**qa_task(template=own), "name": "b"}, {**qa_task(), "name": "c"}],
        template={"instruction": "Solve.", "answer_cue": "\nA:", "target_prefix": ""},
    )
    off, b, c = (t.format.template for t in stream.tasks)
    assert off is None
    assert b.prompt("2+2") == "Add.\nSum: 2+2 =" and b.target_prefix == " "
    assert c.prompt("2+2") == "Solve.\n2+2\nA:" and c.target_prefix == ""
    tok = build_tokenizer(None, ["<qa>"])
    (first, _) = rows_of(encode_task(stream.tasks[0], tok, 64).train)
    assert first == [tok.convert_tokens_to_ids("<qa>"), *ids(tok, "2+2="), *ids(tok, "4"), tok.eos_token_id]


def test_stream_fields_change_a_builtin_streams_format_only_where_given():
    base = build_stream(StreamConfig.model_validate({"builtin": "toy"}), 0)
    assert all(t.format == PromptFormat() for t in base.tasks)
    changed = build_stream(StreamConfig.model_validate({"builtin": "toy", "max_tokens": 12}), 0)
    assert all(t.format == PromptFormat(max_tokens=12) for t in changed.tasks)


layer = st.builds(
    RowFormat,
    template=st.none() | st.booleans() | st.builds(TemplateSpec, instruction=st.text(max_size=8)),
    task_token=st.none() | st.booleans(),
    max_tokens=st.none() | st.integers(4, 4096),
    overlong=st.none() | st.sampled_from(["clip", "skip", "error"]),
)


@settings(max_examples=200, deadline=None)
@given(task=layer, stream=layer, text=st.text(max_size=20))
def test_a_tasks_own_fields_win_then_the_streams_then_the_defaults(task, stream, text):
    fmt = prompt_format([task, stream])
    pick = lambda name, default: next(  # noqa: E731
        (getattr(x, name) for x in (task, stream) if getattr(x, name) is not None), default
    )
    assert fmt.task_token == pick("task_token", True)
    assert fmt.max_tokens == pick("max_tokens", None)
    assert fmt.overlong == pick("overlong", "clip")
    chosen = pick("template", True)
    if chosen is False:
        assert fmt.template is None
    else:
        spec = TemplateSpec() if chosen is True else chosen
        assert fmt.template.prompt(text) == (
            (f"{spec.instruction}\n" if spec.instruction else "") + f"{text}\nAnswer:"
        )


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ValueError, match="system message needs format: chat"):
        StreamConfig.model_validate({"tasks": [qa_task(system="Be brief.")]})
    with pytest.raises(ValueError, match="text task takes no template"):
        StreamConfig.model_validate({"tasks": [{**qa_task(template={}), "kind": "text"}]})
    with pytest.raises(ValueError, match="overlong"):
        StreamConfig.model_validate({"tasks": [qa_task(overlong="truncate")]})
    StreamConfig.model_validate({"format": "chat", "tasks": [qa_task(system="Be brief.")]})


# ------------------------------------------------------------------ chat format


def chat_task(train, eval_=None, **fmt):
    fmt = {"template": Template(instruction="Name the colour."), "chat": True, **fmt}
    return Task(
        "c", "prompt_target", train, eval_ or train[:1], "exact_match", "<c>", format=PromptFormat(**fmt)
    )


def test_chatml_rendering_loss_on_the_assistant_turn_and_the_end_of_turn_stop():
    tok = chat_tokenizer()
    task = chat_task([Example("sky", "blue"), Example("grass", "green")], task_token=False)
    enc = encode_stream_of([task], tok, 128)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert enc.eos_id == end  # generation and self-replay samples stop at the end of the turn
    es = enc.tasks[0].train
    head = ids(tok, "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\n")
    rest = ids(tok, "Name the colour.\nsky<|im_end|>\n<|im_start|>assistant\n")
    assert rows_of(es)[0] == [*head, *rest, *ids(tok, "blue"), end]
    assert enc.tasks[0].prefix == head and enc.prefix_len == len(head)
    batch = es.batch(es.lengths.new_tensor([0, 1]), loss_on="target")
    for b, target in enumerate(("blue", "green")):
        trained = batch.input_ids[b][batch.loss_mask[b]].tolist()
        assert trained == [*ids(tok, target), end]  # the assistant turn only
    whole = es.batch(es.lengths.new_tensor([0]), loss_on="sequence")
    assert whole.input_ids[0][whole.loss_mask[0]].tolist() == [*rest, *ids(tok, "blue"), end]


def test_chat_rows_keep_an_optional_task_token_and_system_message():
    tok = chat_tokenizer(["<c>"])
    task = chat_task([Example("sky", "blue")], system="Answer in one word.")
    enc = encode_task(task, tok, 128)
    start = ids(tok, "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n")
    assert enc.prefix == [tok.convert_tokens_to_ids("<c>"), *start]
    assert rows_of(enc.train)[0][: len(enc.prefix)] == enc.prefix


def test_a_tokenizer_without_chat_template_is_one_line():
    tok = build_tokenizer(None, CHAT_TOKENS)
    tok.name_or_path = "tiny-model"
    with pytest.raises(UserError, match="^the tokenizer of tiny-model has no chat template: ") as err:
        encode_task(chat_task([Example("sky", "blue")], task_token=False), tok, 64)
    assert "\n" not in str(err.value)


def test_messages_rows_the_last_assistant_turn_is_the_target(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "sky"}, {"role": "assistant", "content": "blue"}]},
        {"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "grass"},
            {"role": "assistant", "content": "green"},
        ]},
    ]  # fmt: skip
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(DataSource(file=str(path)), "prompt_target", "t")
    assert examples == [Example("sky", "blue"), Example("grass", "green", context=(("system", "Be brief."),))]
    tok = chat_tokenizer(["<c>"])
    enc = encode_task(chat_task(examples, task_token=False, template=None), tok, 128)
    second = tok.decode(rows_of(enc.train)[1])
    assert second.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\ngrass")
    assert enc.prefix == ids(tok, "<|im_start|>system\n")  # what both rows start with
    with pytest.raises(UserError, match="need format: chat"):
        encode_task(Task("p", "prompt_target", examples, examples, "exact_match", "<c>"), tok, 128)
    bad = [{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]}]
    with pytest.raises(UserError, match="must end with a user message and the assistant's answer"):
        load_examples(DataSource(examples=bad), "prompt_target", "t")


def encode_stream_of(tasks, tok, max_length):
    from lifelong.data.task import Stream

    return encode_stream(Stream("s", tasks), tok, max_length)


# ------------------------------------------------------------------ clipping


LONG = {
    "World": "The summit in Geneva ended without agreement on the border dispute, officials said. " * 6,
    "Sports": "Die Mannschaft gewann das Spiel mit drei zu null. 東京で行われた試合は満員でした。" * 4,
    "Business": "Акции компании выросли после отчёта о прибыли за третий квартал. " * 5,
    "Science or Technology": "A new chip design doubles battery life, researchers report. " * 8,
}


def olora_folder(root, name="ag_news", per_class=6, long=LONG):
    """O-LoRA's CL_Benchmark/TC/<name>/{train,test}.json: {"label": name, "sentence": text} rows."""
    folder = root / "CL_Benchmark" / "TC" / name
    folder.mkdir(parents=True)
    for split, k in (("train", per_class), ("test", 2)):
        rows = [{"label": c, "sentence": f"{split} {i}: {t}"} for c, t in long.items() for i in range(k)]
        (folder / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return folder


def assert_rows_fit_and_end_in_the_answer(enc, tok, max_length):
    cue = ids(tok, "\nAnswer:")
    for task in enc.tasks:
        for es in (task.train, task.eval):
            for i, r in enumerate(rows_of(es)):
                assert len(r) <= max_length
                start = int(es.target_start[i])
                assert r[start - len(cue) : start] == cue  # the cue and the whole label are kept
                label = tok.decode(r[start:-1]).strip()
                assert label in CLASSIFICATION_SETS["ag_news"].classes and r[-1] == enc.eos_id


def test_olora_rows_through_text_cls_benchmark_sources_clip_at_the_defaults(tmp_path):
    folder = olora_folder(tmp_path)
    stream = text_cls_benchmark_stream(
        tasks=["ag_news"], sources={"ag_news": str(folder)}, n_train=6, n_eval=2
    )
    tok = build_tokenizer(None, ["<ag_news>"])
    enc = encode_stream(stream, tok, 128)
    assert_rows_fit_and_end_in_the_answer(enc, tok, 128)
    (note,) = enc.notes  # the byte-level tokenizer spends a token per byte: no room for the options
    assert note == (
        "task 'ag_news': the instruction takes 114 of the 128 tokens of a row: left out; "
        "24 train rows clipped, 8 eval rows clipped to fit the limit of 128 tokens (overlong: clip)"
    )
    roomy = encode_stream(stream, tok, 512)
    first = tok.decode(rows_of(roomy.tasks[0].train)[0])
    assert first.startswith(
        "<ag_news>Topic of the news? Options: World, Sports, Business, Science or Technology.\nText: "
    )
    assert_rows_fit_and_end_in_the_answer(roomy, tok, 512)


def test_olora_rows_through_a_plain_yaml_task_clip_skip_or_stop(tmp_path):
    folder = olora_folder(tmp_path, long={**LONG, "World": "Talks end."})
    source = {"prompt_field": "sentence", "target_field": "label"}
    task = {
        "name": "ag",
        "train": {"file": str(folder / "train.json"), **source},
        "eval": {"file": str(folder / "test.json"), **source},
    }
    tok = build_tokenizer(None, ["<ag>"])
    enc = encode_stream(user_stream([task]), tok, 128)
    assert_rows_fit_and_end_in_the_answer(enc, tok, 128)
    clipped = "18 train rows clipped, 6 eval rows clipped to fit the limit of 128 tokens (overlong: clip)"
    assert enc.notes == [f"task 'ag': {clipped}"]
    limited = encode_stream(user_stream([task], max_tokens=64), tok, 128)
    assert 48 < int(limited.tasks[0].train.lengths.max()) <= 64  # cut at a word boundary
    skip = encode_stream(user_stream([task], overlong="skip"), tok, 128)
    assert len(skip.tasks[0].train) == 6 and "18 train rows skipped" in skip.notes[0]
    with pytest.raises(UserError, match="train example 6 is .* tokens long, longer than the limit of 128"):
        encode_stream(user_stream([{**task, "overlong": "error"}]), tok, 128)


def test_a_clip_cuts_at_a_word_boundary_when_one_is_near():
    assert cut_text("alpha beta gamma", 13) == "alpha beta"
    assert cut_text("東京で行われた試合", 4) == "東京で行"


# ------------------------------------------------------------------ learnable end to end


def keyword_rows(labels: dict[str, str], n: int, seed: int) -> list[dict[str, str]]:
    """O-LoRA-format rows whose label is given away by their first word, filler words after it."""
    import random

    rng, filler = random.Random(seed), ["the", "a", "of", "and", "in", "it", "was", "on", "for", "to"]
    rows = []
    for i in range(n):
        label, word = list(labels.items())[i % len(labels)]
        rows.append({"label": label, "sentence": " ".join([word, *rng.choices(filler, k=4)])})
    return rows


def test_a_tiny_byte_level_model_learns_two_olora_label_sets_above_chance(tmp_path, small_config):
    sets = {
        "sentiment": {"positive": "good", "negative": "bad"},
        "topic": {"Sports": "match", "World": "summit"},
    }
    tasks = []
    for name, labels in sets.items():
        folder = tmp_path / "CL_Benchmark" / "TC" / name
        folder.mkdir(parents=True)
        for split, n, seed in (("train", 200, 0), ("test", 16, 1)):
            (folder / f"{split}.json").write_text(json.dumps(keyword_rows(labels, n, seed)))
        source = {"prompt_field": "sentence", "target_field": "label"}
        tasks.append({
            "name": name,
            "train": {"file": str(folder / "train.json"), **source},
            "eval": {"file": str(folder / "test.json"), **source},
        })  # fmt: skip
    import lifelong

    cfg = small_config(
        stream={"tasks": tasks},
        model={"max_length": 128},
        train={"steps_per_task": 60, "batch_size": 16, "lr": 1e-2, "loss_on": "target", "eval_every": None},
    )
    matrix = lifelong.run(cfg, show_progress=False).progress.matrix
    just_trained = [matrix[k][k] for k in range(2)]
    assert min(just_trained) >= 0.75, just_trained  # chance: 0.5 (two labels)


def test_a_chat_task_trains_on_the_assistant_turn_and_generation_stops_at_its_end(tmp_path):
    import lifelong
    from lifelong.config import parse_config
    from lifelong.data.batching import encode_stream as encode
    from lifelong.models import build_preset, load_for_run

    from .conftest import small_config_dict

    tok = chat_tokenizer()
    folder = tmp_path / "chat-model"
    build_preset("tiny", len(tok), 128, {"hidden_size": 32, "num_layers": 1, "num_heads": 2}).save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    colours = [{"prompt": p, "target": t} for p, t in (("sky", "blue"), ("grass", "green"))] * 8
    stream = {
        "format": "chat",
        "task_token": False,
        "tasks": [{"name": "colours", "train": {"examples": colours}, "eval": {"examples": colours[:2]}}],
    }
    data = small_config_dict(
        tmp_path, stream=stream, train={"steps_per_task": 40, "lr": 1e-2, "loss_on": "target"}
    )
    cfg = parse_config({**data, "model": {"preset": None, "path": str(folder)}})
    result = lifelong.run(cfg, show_progress=False)
    assert result.progress.matrix[0][0] == 1.0  # the answer and its end of turn (the stop), exactly
    built = build_stream(cfg.stream, 0)
    model, tokenizer, context, _, _ = load_for_run(cfg.model, built)
    enc = encode(built, tokenizer, context)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert enc.eos_id == end and "<c>" not in tokenizer.get_vocab()
    prompt = enc.tasks[0].eval.prompts(1)
    assert tokenizer.decode(prompt[0]).endswith("<|im_start|>assistant\n")


def test_configs_written_before_row_formats_keep_their_hash():
    from lifelong.config import load_config, parse_config

    assert load_config("toy_naive").config_hash() == "60bd223e4ce3a260"  # main at 47b93bb
    user = {"stream": {"tasks": [{"name": "a", "train": {"examples": [{"prompt": "x", "target": "y"}]}}]}}
    assert parse_config(user).config_hash() == "5f62c62928e075cd"
    user["stream"]["overlong"] = "clip"
    assert parse_config(user).config_hash() != "5f62c62928e075cd"


def test_self_replay_samples_a_whole_chat_exchange():
    """A chat row holds two stop tokens after its prefix (the user turn's end, the assistant's): a sample
    is cut after the second, so replay holds the answer too, not only the question."""
    import torch

    from lifelong.methods.self_replay import samples_batch

    eos, pad = 9, 0
    sampled = torch.tensor([[5, 6, eos, 7, 8, eos, 4, 4], [5, eos, 7, eos, eos, eos, eos, eos]])
    plain = samples_batch([[1], [1]], sampled, eos, pad)
    chat = samples_batch([[1], [1]], sampled, eos, pad, stops=2)
    assert plain.attention_mask.sum(1).tolist() == [4, 3]  # prompt + up to the first eos
    assert chat.attention_mask.sum(1).tolist() == [7, 5]  # prompt + up to the second eos
