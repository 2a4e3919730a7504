"""The run config: defaults, shorthands, built-in configs, overrides, hashing and one-line errors."""

import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.config import (
    RESUMABLE_FIELDS,
    RunConfig,
    apply_overrides,
    builtin_configs,
    load_config,
    parse_config,
)
from lifelong.errors import UserError
from lifelong.methods import registered

KNOWN_METHODS = sorted(registered())
SCHEDULES = ("constant", "cosine", "linear")


def user_error(data) -> str:
    with pytest.raises(UserError) as err:
        parse_config(data)
    return str(err.value)


# ------------------------------------------------------------------ defaults and shorthands


def test_defaults():
    cfg = parse_config({})
    assert isinstance(cfg, RunConfig)
    assert cfg == parse_config(None)
    assert cfg.name == "run" and cfg.seed == 0 and cfg.output_dir == "runs"
    assert cfg.stream.builtin == "toy" and cfg.stream.tasks is None and cfg.stream.options == {}
    assert cfg.model.preset == "tiny" and cfg.model.path is None and cfg.model.max_length == 64
    t = cfg.train
    assert (t.steps_per_task, t.batch_size, t.lr, t.schedule) == (500, 128, 1e-3, "constant")
    assert (t.warmup_steps, t.loss_on, t.grad_clip, t.weight_decay) == (0, "sequence", 1.0, 0.02)
    assert cfg.tracking == [] and cfg.progress is True


def test_default_methods_is_naive_and_round_trips():
    cfg = parse_config({})
    assert [m.name for m in cfg.methods] == ["naive"]
    again = parse_config(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()


def test_empty_or_null_methods_mean_naive():
    for value in ([], None):
        cfg = parse_config({"methods": value})
        assert [m.name for m in cfg.methods] == ["naive"]


def test_stream_shorthand():
    cfg = parse_config({"stream": "toy"})
    assert cfg.stream.builtin == "toy" and cfg.stream.tasks is None
    assert cfg.stream == parse_config({"stream": {"builtin": "toy"}}).stream


@pytest.mark.parametrize("methods", ["naive", ["naive"], [{"name": "naive"}], {"name": "naive"}])
def test_methods_shorthands(methods):
    cfg = parse_config({"methods": methods})
    assert len(cfg.methods) == 1
    assert cfg.methods[0].name == "naive"
    assert cfg == parse_config({"methods": ["naive"]})


def test_several_methods_with_options():
    cfg = parse_config({"methods": ["naive", {"name": "replay", "buffer_size": 10, "coef": 2.0}]})
    assert [m.name for m in cfg.methods] == ["naive", "replay"]
    assert cfg.methods[1].buffer_size == 10 and cfg.methods[1].coef == 2.0
    dumped = cfg.model_dump(mode="json")
    assert dumped["methods"][1]["buffer_size"] == 10  # the subclass fields are serialized


def test_builtin_configs_load_by_name():
    assert {"toy_naive", "toy_self_replay"} <= set(builtin_configs())
    naive = load_config("toy_naive")
    assert naive.name == "toy-naive"
    assert naive.stream.builtin == "toy" and naive.stream.options == {"n_digits": 2}
    assert [m.name for m in naive.methods] == ["naive"]
    assert naive.model.preset == "tiny" and naive.model.max_length == 16
    assert naive.train.eval_every is not None  # the default job draws every task's curve
    for other in ("toy_self_replay", "toy_replay"):
        cfg = load_config(other)
        assert [m.name for m in cfg.methods] == [other.removeprefix("toy_")]
        # a fair comparison: everything but the method is the same
        assert (cfg.seed, cfg.stream, cfg.model, cfg.train) == (
            naive.seed,
            naive.stream,
            naive.model,
            naive.train,
        )
        assert naive.config_hash() != cfg.config_hash()


def test_load_config_from_file_with_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("name: mine\nstream: toy\ntrain:\n  lr: 0.01\nmethods: naive\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.train.lr == 0.01
    over = load_config(path, {"train.lr": 0.5, "seed": 4, "model.overrides.hidden_size": 32})
    assert over.train.lr == 0.5 and over.seed == 4
    assert over.model.overrides == {"hidden_size": 32}
    assert over.train.batch_size == cfg.train.batch_size
    assert load_config(str(path)) == cfg


def test_load_config_errors(tmp_path):
    with pytest.raises(UserError, match="not found") as err:
        load_config("no_such_config")
    assert "toy_naive" in str(err.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(UserError, match="malformed YAML") as err:
        load_config(bad)
    assert "\n" not in str(err.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  lr: -1\n")
    with pytest.raises(UserError, match=r"wrong\.yaml: train\.lr"):
        load_config(wrong)
    with pytest.raises(UserError, match="mapping"):
        parse_config(["a", "b"])


# ------------------------------------------------------------------ errors


def test_unknown_method():
    msg = user_error({"methods": ["naive", "ewc_plus"]})
    assert "unknown method" in msg and "ewc_plus" in msg
    for name in KNOWN_METHODS:
        assert name in msg
    assert {"joint", "naive", "replay", "self_replay"} <= set(KNOWN_METHODS)
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"trian": {}}, "trian"),
        ({"train": {"learning_rate": 0.1}}, "learning_rate"),
        ({"model": {"presett": "tiny"}}, "presett"),
        ({"methods": [{"name": "replay", "bufer_size": 3}]}, "bufer_size"),
        ({"stream": {"builtin": "toy", "option": {}}}, "option"),
    ],
)
def test_unknown_field_is_named(data, field):
    msg = user_error(data)
    assert field in msg
    assert "\n" not in msg


def test_cross_field_errors():
    assert "builtin" in user_error({"stream": {"options": {}}})
    assert "unique" in user_error(
        {
            "stream": {
                "tasks": [
                    {"name": "a", "train": {"examples": [{"prompt": "x", "target": "y"}]}},
                    {"name": "a", "train": {"examples": [{"prompt": "x", "target": "y"}]}},
                ]
            }
        }
    )
    assert "exactly one" in user_error(
        {"stream": {"tasks": [{"name": "a", "train": {"file": "x.jsonl", "hf": "y"}}]}}
    )
    assert "plain directory name" in user_error({"name": "a/b"})


# ------------------------------------------------------------------ overrides


def test_apply_overrides_dotted_keys():
    data = {"train": {"lr": 0.1, "batch_size": 4}, "seed": 1}
    out = apply_overrides(data, {"train.lr": 0.2, "model.overrides.hidden_size": 16, "seed": 3})
    assert out == {
        "train": {"lr": 0.2, "batch_size": 4},
        "seed": 3,
        "model": {"overrides": {"hidden_size": 16}},
    }
    assert data == {"train": {"lr": 0.1, "batch_size": 4}, "seed": 1}  # input untouched
    assert apply_overrides(None, {"a.b": 1}) == {"a": {"b": 1}}
    assert apply_overrides({"x": 1}, {}) == {"x": 1}
    cfg = parse_config(out)
    assert cfg.train.lr == 0.2 and cfg.seed == 3 and cfg.model.overrides == {"hidden_size": 16}


def test_a_number_in_a_dotted_key_picks_a_list_entry():
    data = {"methods": ["self_replay:loss=kl", {"name": "ewc", "strength": 1}]}
    out = apply_overrides(data, {"methods.0.coef": 10, "methods.1.strength": 5})
    assert out["methods"] == [
        {"name": "self_replay", "loss": "kl", "coef": 10},
        {"name": "ewc", "strength": 5},
    ]
    assert data["methods"][0] == "self_replay:loss=kl"  # input untouched
    assert apply_overrides(data, {"methods.1": "lwf"})["methods"][1] == "lwf"
    cfg = parse_config(out)
    assert cfg.methods[0].coef == 10 and cfg.methods[1].strength == 5
    for key in ("methods.2.coef", "methods.x.coef", "train.methods.0.coef"):
        with pytest.raises(UserError, match="is not an entry of a list"):
            apply_overrides({"methods": ["naive"], "train": {}}, {key: 1})


def test_override_below_stream_shorthand_keeps_builtin():
    data = apply_overrides({"stream": "toy"}, {"stream.options.n_digits": 3})
    cfg = parse_config(data)
    assert cfg.stream.builtin == "toy" and cfg.stream.options == {"n_digits": 3}


# ------------------------------------------------------------------ config_hash


BASE = {"methods": ["naive"], "stream": {"builtin": "toy"}, "train": {"steps_per_task": 10}}


def test_hash_ignores_resumable_fields():
    base = parse_config(BASE).config_hash()
    assert len(base) == 16 and int(base, 16) >= 0
    changes = {
        "name": "other",
        "output_dir": "elsewhere",
        "tracking": ["tensorboard"],
        "tracking_project": "other",
        "progress": False,
        "train.eval_batch_size": 7,
        "train.checkpoint_every": 3,
        "train.keep_checkpoints": 5,
        "train.predictions": 0,
    }
    assert set(changes) == RESUMABLE_FIELDS
    for key, value in changes.items():
        cfg = parse_config(apply_overrides(BASE, {key: value}))
        assert cfg.config_hash() == base, key
    every = parse_config(apply_overrides(BASE, changes))
    assert every.config_hash() == base


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("train.lr", 0.5),
        ("seed", 1),
        ("train.batch_size", 3),
        ("train.schedule", "cosine"),
        ("train.loss_on", "target"),
        ("train.eval_examples", 5),
        ("model.max_length", 32),
        ("stream.options", {"n_digits": 1}),
        ("methods", ["joint"]),
    ],
)
def test_hash_changes_with_computing_fields(key, value):
    base = parse_config(BASE)
    changed = parse_config(apply_overrides(BASE, {key: value}))
    assert changed != base
    assert changed.config_hash() != base.config_hash()


def test_hash_is_stable():
    a, b = parse_config(BASE), parse_config(dict(BASE))
    assert a.config_hash() == b.config_hash()
    # key order of the input does not matter
    reordered = {"train": {"steps_per_task": 10}, "stream": "toy", "methods": ["naive"]}
    assert parse_config(reordered).config_hash() == a.config_hash()


# ------------------------------------------------------------------ property tests

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

valid_train = st.fixed_dictionaries(
    {
        "steps_per_task": st.integers(1, 10**9),
        "batch_size": st.integers(1, 10**6),
        "lr": st.floats(min_value=0, max_value=1e3, exclude_min=True, allow_nan=False),
        "schedule": st.sampled_from(SCHEDULES),
        "warmup_steps": st.integers(0, 10**6),
    },
    optional={
        "min_lr_ratio": st.floats(0, 1),
        "weight_decay": st.floats(0, 10),
        "loss_on": st.sampled_from(["sequence", "target"]),
        "grad_clip": st.none() | st.floats(min_value=1e-6, max_value=100),
        "eval_every": st.none() | st.integers(1, 1000),
    },
)
valid_methods = st.sampled_from(
    ["naive", ["joint"], [{"name": "replay", "buffer_size": 5}], ["naive", "self_replay"]]
)


@SETTINGS
@given(train=valid_train, methods=valid_methods, seed=st.integers(0, 2**63 - 1))
def test_valid_configs_round_trip(train, methods, seed):
    cfg = parse_config({"train": train, "methods": methods, "seed": seed})
    for key, value in train.items():
        assert getattr(cfg.train, key) == value
    again = parse_config(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    # also through YAML, as a run directory stores it
    from_yaml = parse_config(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert from_yaml == cfg
    assert from_yaml.config_hash() == cfg.config_hash()


invalid_train = st.one_of(
    st.fixed_dictionaries({"batch_size": st.integers(max_value=0)}),
    st.fixed_dictionaries({"steps_per_task": st.integers(max_value=0)}),
    st.fixed_dictionaries({"warmup_steps": st.integers(max_value=-1)}),
    st.fixed_dictionaries({"lr": st.floats(max_value=0) | st.just(math.nan)}),
    st.fixed_dictionaries({"schedule": st.text(max_size=30).filter(lambda s: s not in SCHEDULES)}),
)


@SETTINGS
@given(bad=invalid_train, good=valid_train)
def test_invalid_values_raise_one_line_user_error(bad, good):
    data = {"train": {**good, **bad}, "methods": "naive"}
    with pytest.raises(UserError) as err:
        parse_config(data)
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg
    (field,) = bad
    assert msg.startswith(f"config: train.{field}: ")


def test_unknown_key_with_newline_still_one_line():
    msg = user_error({"train": {"a\nb": 1}})
    assert "\n" not in msg


def test_method_specs_compose_with_options():
    from lifelong.config import method_list, run_name, stream_config

    assert method_list("self_replay:loss=kl:coef=10+lora") == [
        {"name": "self_replay", "loss": "kl", "coef": 10},
        {"name": "lora"},
    ]
    assert method_list("naive") == [{"name": "naive"}]
    assert run_name("language", "self_replay:loss=kl") == "language-self_replay-loss=kl"
    cfg = stream_config("toy", "self_replay:loss=kl:replay_fraction=0.5")
    assert cfg.methods[0].loss == "kl" and cfg.methods[0].replay_fraction == 0.5
    with pytest.raises(UserError, match="name:key=value"):
        method_list("self_replay:kl")


@given(st.dictionaries(st.sampled_from(["coef", "replay_fraction", "refresh_every"]), st.integers(1, 99)))
def test_method_spec_options_round_trip(options):
    from lifelong.config import method_list

    spec = "self_replay" + "".join(f":{k}={v}" for k, v in options.items())
    assert method_list(spec) == [{"name": "self_replay", **options}]
