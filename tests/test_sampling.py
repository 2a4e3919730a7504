"""Batched generation with a KV cache: greedy equals a naive argmax loop, left padding is neutral,
sampling depends only on the generator, stop tokens fill the rest of the row."""

import pytest
import torch

from lifelong.data.batching import pad_rows
from lifelong.models import build_preset
from lifelong.sampling import generate

VOCAB, MAX_LEN, PAD = 40, 48, 0
SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_preset("tiny", VOCAB, MAX_LEN, overrides=SMALL)
    # sharper logits than the default 0.02 init, so argmax decisions are far from ties
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return m.eval()


PROMPTS = [
    [3, 7, 9],
    [5],
    [12, 4, 4, 8, 30, 2, 11],
    [6, 6],
    [39, 1, 20, 21, 22],
]


def naive_greedy(model, prompt, n):
    """Re-run the whole sequence without a cache at every step and take the argmax."""
    seq = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            nxt = int(logits.argmax())
            out.append(nxt)
            seq.append(nxt)
    return out


def test_prompts_are_left_padded():
    ids, mask = pad_rows([[1, 2, 3], [4]], pad_id=9, side="left")
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_greedy_matches_naive_loop(model):
    n = 12
    out = generate(model, PROMPTS, n, PAD, greedy=True)
    assert out.shape == (len(PROMPTS), n)
    assert out.dtype == torch.long
    for i, p in enumerate(PROMPTS):
        assert out[i].tolist() == naive_greedy(model, p, n), i


def test_greedy_matches_naive_loop_default_init():
    torch.manual_seed(1)
    m = build_preset("tiny", VOCAB, MAX_LEN, overrides=SMALL).eval()
    out = generate(m, PROMPTS, 6, PAD, greedy=True)
    for i, p in enumerate(PROMPTS):
        assert out[i].tolist() == naive_greedy(m, p, 6), i


def test_greedy_output_is_not_trivial(model):
    # guard against a degenerate model that makes every comparison vacuous
    out = generate(model, PROMPTS, 12, PAD, greedy=True)
    assert len({tuple(r) for r in out.tolist()}) > 1
    assert len(set(out.flatten().tolist())) > 3


def test_left_padding_does_not_change_a_row(model):
    short = [7, 2]
    alone = generate(model, [short], 10, PAD, greedy=True)
    batched = generate(model, [[1, 2, 3, 4, 5, 6, 7, 8, 9], short, [30, 31, 32, 33]], 10, PAD)
    assert batched[1].tolist() == alone[0].tolist()
    # and the same prompt in two positions of the batch
    twice = generate(model, [short, [9] * 12, short], 10, PAD)
    assert twice[0].tolist() == twice[2].tolist() == alone[0].tolist()


def test_pad_id_value_does_not_matter(model):
    a = generate(model, PROMPTS, 8, pad_id=0)
    b = generate(model, PROMPTS, 8, pad_id=17)
    assert torch.equal(a, b)


def test_chunking_by_batch_size_does_not_change_greedy(model):
    full = generate(model, PROMPTS, 9, PAD, greedy=True)
    chunked = generate(model, PROMPTS, 9, PAD, greedy=True, batch_size=2)
    assert torch.equal(full, chunked)


def test_sampling_depends_only_on_generator(model):
    def sample(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return generate(model, PROMPTS * 2, 10, PAD, greedy=False, generator=gen, **kw)

    a, b = sample(123), sample(123)
    assert torch.equal(a, b)
    # the global RNG is not used: reseeding it changes nothing
    torch.manual_seed(999)
    c = sample(123)
    assert torch.equal(a, c)
    d = sample(124)
    assert not torch.equal(a, d)
    assert a.shape == d.shape == (len(PROMPTS) * 2, 10)
    assert int(a.min()) >= 0 and int(a.max()) < VOCAB
    # chunked sampling with the same generator is reproducible as well
    assert torch.equal(sample(5, batch_size=4), sample(5, batch_size=4))


def test_sampling_is_not_greedy_at_high_temperature(model):
    gen = torch.Generator().manual_seed(0)
    sampled = generate(model, PROMPTS * 4, 15, PAD, greedy=False, temperature=3.0, generator=gen)
    greedy = generate(model, PROMPTS * 4, 15, PAD, greedy=True)
    assert not torch.equal(sampled, greedy)
    # identical prompts get different samples within one batch
    n = len(PROMPTS)
    assert not torch.equal(sampled[:n], sampled[n : 2 * n])


def test_near_zero_temperature_sampling_equals_greedy(model):
    gen = torch.Generator().manual_seed(0)
    cold = generate(model, PROMPTS, 10, PAD, greedy=False, temperature=1e-6, generator=gen)
    assert torch.equal(cold, generate(model, PROMPTS, 10, PAD, greedy=True))


def test_without_stop_id_rows_are_full_length(model):
    n = 14
    out = generate(model, PROMPTS, n, PAD, greedy=True)
    stop = int(out[0, 1])  # a token that does occur early in a row
    assert out.shape == (len(PROMPTS), n)
    # the row goes on after producing `stop`: it equals the naive loop to the end
    assert out[0].tolist() == naive_greedy(model, PROMPTS[0], n)
    assert out[0, 2:].tolist() != [stop] * (n - 2)


def test_stop_id_fills_after_stop(model):
    n = 14
    free = generate(model, PROMPTS, n, PAD, greedy=True)
    stop = int(free[0, 2])
    out = generate(model, PROMPTS, n, PAD, greedy=True, stop_id=stop)
    assert out.shape == (len(PROMPTS), n)
    seen_stop = False
    for i in range(len(PROMPTS)):
        row = free[i].tolist()
        if stop in row:
            k = row.index(stop)
            seen_stop = True
            assert out[i, : k + 1].tolist() == row[: k + 1], i
            assert out[i, k + 1 :].tolist() == [stop] * (n - k - 1), i
        else:
            assert out[i].tolist() == row, i
    assert seen_stop


def test_dropping_finished_rows_keeps_tokens_and_logits(model):
    # rows that stopped leave the batch and the KV cache: the live rows decode as before
    n = 14
    free = generate(model, PROMPTS, n, PAD, greedy=True)
    stop = int(free[0, 2])
    kept, kept_logits = generate(model, PROMPTS, n, PAD, stop_id=stop, return_logits=True)
    dropped, dropped_logits = generate(
        model, PROMPTS, n, PAD, stop_id=stop, return_logits=True, drop_finished=True
    )
    assert torch.equal(dropped, kept)
    assert any(stop in row and row.index(stop) < n - 1 for row in free.tolist())  # a row did drop
    for i, row in enumerate(kept.tolist()):
        last = row.index(stop) if stop in row else n - 1  # logits up to the one that drew the stop
        torch.testing.assert_close(dropped_logits[i, : last + 1], kept_logits[i, : last + 1])
        assert (dropped_logits[i, last + 1 :] == 0).all()


def test_stop_id_everyone_stops_early(model):
    # every row stops at its first step: decoding ends early and the rest is stop_id
    first = generate(model, [[4, 4, 4]] * 3, 1, PAD)
    stop = int(first[0, 0])
    out = generate(model, [[4, 4, 4]] * 3, 20, PAD, stop_id=stop)
    assert out.shape == (3, 20)
    assert (out == stop).all()


@pytest.mark.parametrize("training", [True, False])
def test_mode_restored_and_eval_during_generation(model, training):
    seen = []
    handle = model.model.layers[0].register_forward_hook(lambda mod, i, o: seen.append(mod.training))
    try:
        model.train(training)
        generate(model, PROMPTS[:2], 3, PAD, greedy=True)
        assert model.training is training
        assert all(m.training is training for m in model.modules())
        gen = torch.Generator().manual_seed(0)
        generate(model, PROMPTS[:2], 3, PAD, greedy=False, generator=gen)
        assert model.training is training
    finally:
        handle.remove()
        model.eval()
    assert seen and not any(seen)  # every forward ran in eval mode


def test_generate_does_not_track_gradients(model):
    out = generate(model, PROMPTS[:1], 2, PAD)
    assert not out.requires_grad
    assert all(p.grad is None for p in model.parameters())
