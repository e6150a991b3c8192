"""Decode loop and sampling: golden greedy run, stop rules, batching, streaming, sampler maths."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from contract import CONTRACT_DIR, filled_state_dict
from test_t2s import TINY, request, tiny_model

from wyoming_sovits.generate import (
    EOS_BLOCKED_STEPS,
    RowParams,
    SamplingError,
    SamplingParams,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    decode,
    filtered_probs,
    generate,
    generate_batch,
    generate_stream,
    sample_from,
)
from wyoming_sovits.models.t2s import T2SConfig, T2SInput, Text2Semantic, pack_inputs

GREEDY = SamplingParams(top_k=1)


def rows(*params: SamplingParams, vocab: int = 8) -> RowParams:
    return RowParams.of(list(params), vocab)


def rigged_model(logits: list[float]) -> Text2Semantic:
    """A tiny model whose next-token logits are ``logits`` whatever the input.

    The last LayerNorm outputs its bias e_0, and the head's column 0 holds the logits.
    """
    assert len(logits) == TINY.vocab_size
    model = tiny_model()
    last = model.h.layers[-1]
    with torch.no_grad():
        last.norm2.weight.zero_()
        last.norm2.bias.zero_()
        last.norm2.bias[0] = 1.0
        model.ar_predict_layer.weight.zero_()
        model.ar_predict_layer.weight[:, 0] = torch.tensor(logits)
    return model


def one(item: T2SInput) -> dict[str, torch.Tensor | None]:
    return {"phone_ids": item.phone_ids, "bert": item.bert, "prompt_tokens": item.prompt_tokens}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Batch-1 decoding gains little from intra-op threads; on a shared CPU they spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_golden_greedy_decode() -> None:
    """Full-size v2 GPT with filled weights: every step's raw logits and the exact tokens.

    The golden run stops once more than 80 tokens were generated, i.e. 81 steps.
    """
    golden = np.load(CONTRACT_DIR / "golden_s1_v2.npz")
    model = Text2Semantic(T2SConfig.v2()).eval()
    weights = {k.removeprefix("model."): v for k, v in filled_state_dict("s1_v2").items()}
    model.load_state_dict(weights, strict=True)
    prompt = torch.from_numpy(golden["prompts"])[0]
    item = T2SInput(torch.from_numpy(golden["x"])[0], torch.from_numpy(golden["bert"])[0], prompt)
    params = SamplingParams(top_k=1, repetition_penalty=1.35)
    steps = list(decode(model, pack_inputs([item], model.config), [params], max_new_tokens=81))
    logits = torch.stack([s.logits[0] for s in steps])  # (81, 1025)
    want = torch.from_numpy(golden["step_logits"])
    rel = (logits - want).norm(dim=1) / want.norm(dim=1)
    assert rel.max().item() < 1e-4
    tokens = torch.cat([prompt, torch.stack([s.tokens[0] for s in steps])])
    assert tokens.tolist() == golden["tokens"][0].tolist()
    assert all(bool(s.emitted[0]) for s in steps)


def test_repetition_penalty_sign_rule() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([[2.0]]))
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]


def test_prompt_tokens_are_penalised() -> None:
    """Token 3 leads the raw logits, but it is in the prompt, so 5 wins first after ÷1.35."""
    logits = [0.0] * TINY.vocab_size
    logits[3], logits[5] = 1.0, 0.9
    model = rigged_model(logits)
    item = request(4, 2, 0)
    item = T2SInput(item.phone_ids, item.bert, torch.tensor([3, 3]))
    tokens = generate(model, **one(item), top_k=1, max_new_tokens=4)
    # then 3 (1/1.35) beats the now penalised 5 (0.9/1.35); a penalty never compounds
    assert tokens.tolist() == [5, 3, 3, 3]


def test_top_p_keeps_nucleus_and_at_least_one() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # upstream keeps what lies within top_p: cumulative 0.5, 0.8 <= 0.85 < 0.95
    kept = torch.isfinite(apply_top_p(logits, torch.tensor([[0.85]])))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(apply_top_p(logits, torch.tensor([[0.7]])))
    assert kept.tolist() == [[True, False, False, False]]
    kept = torch.isfinite(apply_top_p(logits, torch.tensor([[0.01]])))
    assert kept.tolist() == [[True, False, False, False]]


def test_top_p_of_one_keeps_everything() -> None:
    logits = torch.randn(4, 1025, generator=torch.Generator().manual_seed(0))
    assert torch.equal(apply_top_p(logits, torch.ones(4, 1)), logits)


def test_top_k_per_row() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    out = apply_top_k(logits, torch.tensor([1, 3]), 3)
    assert torch.isfinite(out).tolist() == [[False, True, False, False], [False, True, True, True]]


def test_top_p_is_applied_before_temperature() -> None:
    """A cold temperature must not shrink the nucleus chosen at temperature 1."""
    logits = torch.log(torch.tensor([[0.4, 0.35, 0.25, 1e-9]]))
    warm = filtered_probs(logits, rows(SamplingParams(top_k=4, top_p=0.8), vocab=4))
    cold = filtered_probs(
        logits, rows(SamplingParams(top_k=4, top_p=0.8, temperature=0.1), vocab=4)
    )
    assert (warm > 0).tolist() == (cold > 0).tolist() == [[True, True, False, False]]
    assert cold[0, 0] > warm[0, 0]


def test_zero_temperature_is_clamped_not_nan() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    probs = filtered_probs(logits, rows(SamplingParams(top_k=3, temperature=0.0), vocab=3))
    assert probs.tolist() == [[0.0, 1.0, 0.0]]


def test_sample_from_follows_probabilities_and_seed() -> None:
    probs = torch.tensor([[0.2, 0.5, 0.3]]).expand(20000, 3)
    draws = sample_from(probs, torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.02)
    again = sample_from(probs, torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)


def test_eos_is_barred_for_the_first_steps() -> None:
    logits = [0.0] * TINY.vocab_size
    logits[TINY.eos] = 10.0
    tokens = generate(rigged_model(logits), **one(request(4, 3, 0)), top_k=1)
    assert len(tokens) == EOS_BLOCKED_STEPS
    assert TINY.eos not in tokens.tolist()


def test_argmax_eos_stops_even_when_the_sample_is_not_eos() -> None:
    """EOS leads the logits only slightly: sampling among 15 rarely picks it, yet step 11 ends."""
    logits = [0.9] * TINY.vocab_size
    logits[TINY.eos] = 1.0
    model = rigged_model(logits)
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        tokens = generate(model, **one(request(4, 3, 0)), top_k=15, generator=gen)
        assert len(tokens) == EOS_BLOCKED_STEPS


def test_stop_check_reads_the_penalised_logits() -> None:
    """Raw argmax is token 7; once 7 is penalised (1.2/1.35 < 1.0) the argmax is EOS: stop."""
    logits = [-100.0] * TINY.vocab_size
    logits[7], logits[TINY.eos] = 1.2, 1.0
    model = rigged_model(logits)
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        tokens = generate(model, **one(request(4, 3, 0)), top_k=2, generator=gen)
        assert tokens.tolist() == [7] * EOS_BLOCKED_STEPS


def test_sampled_eos_stops_and_is_not_emitted() -> None:
    """Token 7 always leads the argmax; EOS is only ever sampled."""
    logits = [-100.0] * TINY.vocab_size
    logits[7], logits[TINY.eos] = 1.0, 0.5
    model = rigged_model(logits)
    lengths = set()
    for seed in range(6):
        gen = torch.Generator().manual_seed(seed)
        tokens = generate(
            model, **one(request(4, 3, 0)), top_k=2, max_new_tokens=200, generator=gen
        )
        assert set(tokens.tolist()) == {7}
        assert EOS_BLOCKED_STEPS <= len(tokens) < 200
        lengths.add(len(tokens))
    assert len(lengths) > 1  # the stop point depends on the draw


def test_cap_on_new_tokens() -> None:
    logits = [0.0] * TINY.vocab_size
    logits[TINY.eos] = -50.0
    tokens = generate(rigged_model(logits), **one(request(4, 3, 0)), top_k=1, max_new_tokens=17)
    assert len(tokens) == 17


def test_seeded_sampling_is_reproducible() -> None:
    model = tiny_model(2)
    kwargs = {**one(request(6, 5, 1)), "top_k": 15, "temperature": 1.2, "max_new_tokens": 30}
    a = generate(model, **kwargs, generator=torch.Generator().manual_seed(7))
    b = generate(model, **kwargs, generator=torch.Generator().manual_seed(7))
    c = generate(model, **kwargs, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_batch_of_different_lengths_matches_single_runs() -> None:
    """Rows with different text and prompt lengths (one reference-free) stop on their own."""
    model = tiny_model(3)
    items = [request(5, 7, 20), request(9, 0, 21), request(3, 12, 22)]
    caps = 25
    batch_steps = list(decode(model, pack_inputs(items, TINY), [GREEDY] * 3, caps))
    batched = generate_batch(model, items, GREEDY, max_new_tokens=caps)
    for row, item in enumerate(items):
        single_steps = list(decode(model, pack_inputs([item], TINY), [GREEDY], caps))
        single = generate(model, **one(item), top_k=1, max_new_tokens=caps)
        assert torch.equal(batched[row], single)
        for s, b in zip(single_steps, batch_steps, strict=False):
            torch.testing.assert_close(s.logits[0], b.logits[row], rtol=1e-5, atol=1e-5)
    assert len({len(t) for t in batched}) > 1, "rows should stop at different steps"


def test_per_row_sampling_parameters() -> None:
    model = tiny_model(4)
    items = [request(5, 4, 30), request(5, 4, 30)]
    hot = SamplingParams(top_k=50, temperature=2.0)
    gen = torch.Generator().manual_seed(0)
    greedy_row, hot_row = generate_batch(
        model, items, [GREEDY, hot], max_new_tokens=30, generator=gen
    )
    assert torch.equal(greedy_row, generate(model, **one(items[0]), top_k=1, max_new_tokens=30))
    assert not torch.equal(greedy_row, hot_row)


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_stream_yields_the_same_tokens_in_chunks(chunk_size: int) -> None:
    model = tiny_model(5)
    item = request(6, 5, 40)
    whole = generate(model, **one(item), top_k=1, max_new_tokens=30)
    chunks = list(
        generate_stream(model, **one(item), params=GREEDY, max_new_tokens=30, chunk_size=chunk_size)
    )
    assert torch.equal(torch.cat(chunks), whole)
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= chunk_size
    assert len(chunks) == math.ceil(len(whole) / chunk_size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"temperature": -1.0},
        {"repetition_penalty": 0.0},
    ],
)
def test_invalid_sampling_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(SamplingError):
        SamplingParams(**kwargs)
