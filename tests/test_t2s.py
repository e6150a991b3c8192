"""Text-to-semantic model: official names and shapes, config, packing, KV cache, golden text hidden."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from contract import CONTRACT_DIR, filled_state_dict, manifest

from wyoming_sovits.models.t2s import (
    AUDIO,
    PAD,
    TEXT,
    T2SCacheError,
    T2SConfig,
    T2SConfigError,
    T2SInput,
    T2SInputError,
    Text2Semantic,
    pack_inputs,
    prefill_mask,
)

TINY = T2SConfig(
    vocab_size=65,
    phoneme_vocab_size=40,
    embedding_dim=32,
    hidden_dim=32,
    n_head=4,
    linear_units=64,
    n_layer=2,
    eos=64,
    bert_dim=16,
    max_positions=2048,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small matmuls gain little from intra-op threads; on a shared CPU they spin-wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official(family: str) -> dict[str, list[int]]:
    """Manifest names with the Lightning ``model.`` prefix stripped, as our module names them."""
    return {
        name.removeprefix("model."): shape
        for name, (shape, _) in manifest(family)["state_dict"].items()
    }


def tiny_model(seed: int = 0) -> Text2Semantic:
    torch.manual_seed(seed)
    return Text2Semantic(TINY).eval()


def request(lx: int, ly: int, seed: int, config: T2SConfig = TINY) -> T2SInput:
    g = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, config.phoneme_vocab_size, (lx,), generator=g)
    bert = torch.randn(config.bert_dim, lx, generator=g)
    prompt = torch.randint(0, config.eos, (ly,), generator=g) if ly else None
    return T2SInput(phones, bert, prompt)


@pytest.mark.parametrize(
    ("family", "config"), [("s1_v2", T2SConfig.v2()), ("s1_v1", T2SConfig.v1())]
)
def test_state_dict_names_and_shapes_are_official(family: str, config: T2SConfig) -> None:
    model = Text2Semantic(config)
    model.setup_caches(2, 64)  # caches and tables must stay out of the state dict
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert ours == official(family)


@pytest.mark.parametrize(
    ("family", "config"), [("s1_v2", T2SConfig.v2()), ("s1_v1", T2SConfig.v1())]
)
def test_config_from_stored_hparams(family: str, config: T2SConfig) -> None:
    assert T2SConfig.from_stored(manifest(family)["config_model"]) == config


def test_config_errors_name_the_problem() -> None:
    stored = dict(manifest("s1_v2")["config_model"])
    del stored["head"]
    with pytest.raises(T2SConfigError, match="head"):
        T2SConfig.from_stored(stored)
    with pytest.raises(T2SConfigError, match="EOS"):
        T2SConfig(eos=1000)
    with pytest.raises(T2SConfigError, match="n_head"):
        T2SConfig(n_head=7)


def test_golden_text_hidden() -> None:
    """Text embedding + BERT projection + scaled sine positions, full size, filled weights."""
    golden = np.load(CONTRACT_DIR / "golden_s1_v2.npz")
    model = Text2Semantic(T2SConfig.v2()).eval()
    weights = {k.removeprefix("model."): v for k, v in filled_state_dict("s1_v2").items()}
    model.load_state_dict(weights, strict=True)
    phones = torch.from_numpy(golden["x"])[0]
    item = T2SInput(
        phones, torch.from_numpy(golden["bert"])[0], torch.from_numpy(golden["prompts"])[0]
    )
    with torch.no_grad():
        hidden = model.embed_prompt(pack_inputs([item], model.config))[:, : phones.shape[0]]
    want = torch.from_numpy(golden["text_hidden"])
    assert ((hidden - want).norm() / want.norm()).item() < 1e-4


def test_pack_inputs_left_pads_text_then_audio() -> None:
    packed = pack_inputs([request(3, 2, 0), request(2, 0, 1)], TINY)
    assert packed.kind.tolist() == [
        [TEXT, TEXT, TEXT, AUDIO, AUDIO],
        [PAD, PAD, PAD, TEXT, TEXT],
    ]
    assert packed.positions.tolist() == [[0, 1, 2, 0, 1], [0, 0, 0, 0, 1]]
    assert packed.bert.shape == (2, 5, TINY.bert_dim)


def test_pack_inputs_copies_bert_unless_the_caller_knows_it_is_zeros() -> None:
    """Features are copied into the batch; with ``bert_zeros`` (English and the other
    languages but Chinese) they are neither read nor copied, and a zero view serves."""
    bert = torch.ones(TINY.bert_dim, 3)
    ids = torch.tensor([1, 2, 3])
    copied = pack_inputs([T2SInput(ids, bert)], TINY)
    assert copied.bert[0].T.tolist() == bert.tolist()
    marked = pack_inputs([T2SInput(ids, bert, bert_zeros=True)], TINY)
    assert not marked.bert.any()
    view = torch.zeros(()).expand(TINY.bert_dim, 3)
    assert not pack_inputs([T2SInput(ids, view, bert_zeros=True)], TINY).bert.any()


def test_prefill_mask_follows_text_audio_rule() -> None:
    kind = torch.tensor([[PAD, TEXT, TEXT, AUDIO, AUDIO]])
    allowed = prefill_mask(kind)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],  # padding sees only itself
        [0, 1, 1, 0, 0],  # text sees all text, no audio
        [0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0],  # audio sees text and earlier audio
        [0, 1, 1, 1, 1],
    ]


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (T2SInput(torch.tensor([1, 2]), torch.zeros(16, 3)), "bert"),
        (T2SInput(torch.tensor([1, 40]), torch.zeros(16, 2)), "phone ids"),
        (
            T2SInput(torch.tensor([1, 2]), torch.zeros(16, 2), torch.tensor([3, 64])),
            "prompt tokens",
        ),
        (T2SInput(torch.tensor([], dtype=torch.long), torch.zeros(16, 0)), "non-empty"),
    ],
)
def test_pack_inputs_rejects_malformed_requests(item: T2SInput, match: str) -> None:
    with pytest.raises(T2SInputError, match=match):
        pack_inputs([item], TINY)


def test_cache_must_be_set_up_and_large_enough() -> None:
    model = tiny_model()
    packed = pack_inputs([request(5, 4, 0)], TINY)
    with pytest.raises(T2SCacheError, match="setup_caches"):
        model.prefill(packed)
    model.setup_caches(1, 8)
    with pytest.raises(T2SCacheError, match="need 1 × 9"):
        model.prefill(packed)


@torch.no_grad()
def test_incremental_decode_matches_full_prefill() -> None:
    """Each cached one-token step gives the logits of re-running the whole sequence."""
    model = tiny_model()
    model.setup_caches(2, 64)
    item = request(6, 5, 3)
    packed = pack_inputs([item], TINY)
    logits = model.prefill(packed)
    reference = Text2Semantic(TINY).eval()  # same weights, its own cache
    reference.load_state_dict(model.state_dict())
    reference.setup_caches(1, 64)
    tokens: list[int] = []
    for step in range(12):
        token = int(logits.argmax(-1))
        tokens.append(token)
        assert item.prompt_tokens is not None
        grown = T2SInput(
            item.phone_ids, item.bert, torch.cat([item.prompt_tokens, torch.tensor(tokens)])
        )
        logits = model(torch.tensor([token]), torch.tensor([packed.length + step]))
        full = reference.prefill(pack_inputs([grown], TINY))
        torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_batched_prefill_and_steps_match_single_rows() -> None:
    """Left padding and per-row offsets: a batch row computes what it computes alone."""
    model = tiny_model(1)
    items = [request(5, 7, 10), request(9, 0, 11), request(3, 12, 12)]
    model.setup_caches(3, 64)
    packed = pack_inputs(items, TINY)
    batch_logits = [model.prefill(packed)]
    pos = torch.full((3,), packed.length)
    feed = torch.tensor([1, 2, 3])
    for step in range(4):
        batch_logits.append(model(feed + step, pos + step))
    assert all(torch.isfinite(t).all() for t in batch_logits)
    for row, item in enumerate(items):
        single = pack_inputs([item], TINY)
        logits = [model.prefill(single)]
        for step in range(4):
            logits.append(model(feed[row : row + 1] + step, torch.tensor([single.length + step])))
        for got, want in zip(logits, batch_logits, strict=True):
            torch.testing.assert_close(got[0], want[row], rtol=1e-5, atol=1e-5)
