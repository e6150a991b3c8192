"""Autoregressive decoding of semantic tokens: sampling, stop rules, and the decode loop.

Sampling follows upstream GPT-SoVITS exactly, so that greedy decoding reproduces it token
for token: repetition penalty over every earlier token including the prompt (negative
logits multiplied, positive divided), then top-p, then temperature, then top-k, softmax,
then ``argmax(probs / Exponential(1))`` (a multinomial draw without a host sync). EOS is
barred for the first 11 steps; a row stops when the argmax of its penalised logits or its
sample is EOS, and the EOS itself is not emitted; at most 1500 tokens by default.

Every row of a batch carries its own sampling parameters as tensors, so one fixed-shape
step serves a whole batch. The loop syncs with the host once per step (``active.any()``)
to know when all rows have stopped; a GPU runner can check every few steps instead,
since a stopped row keeps decoding harmlessly and its extra tokens are discarded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .models.t2s import (
    AUDIO,
    PackedPrompt,
    T2SInput,
    T2SInputError,
    Text2Semantic,
    host_to_device,
    pack_inputs,
)

EOS_BLOCKED_STEPS = 11
"""Steps 0–10 cannot end the utterance: at least 11 tokens (0.44 s) are produced."""

DEFAULT_MAX_NEW_TOKENS = 1500
"""Upstream's cap per text segment: 60 s of audio at 25 tokens/s."""

_CACHE_ROUND = 128

DYNAMIC_SHAPE_ATTENTION = (
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.MATH,
)
"""SDPA backends for calls whose shapes change from call to call: a prefill (its length
is the sentence's) and eager decode steps. cuDNN's SDPA, which PyTorch prefers on Hopper,
builds an execution plan for each new shape, tens of milliseconds every time."""


def dynamic_shape_attention() -> contextlib.AbstractContextManager[None]:
    """Context restricting SDPA to ``DYNAMIC_SHAPE_ATTENTION`` (no-op on CPU backends)."""
    return sdpa_kernel(list(DYNAMIC_SHAPE_ATTENTION))


class SamplingError(ValueError):
    """A sampling parameter is out of its valid range."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request wants from the sampler (defaults are upstream's)."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise SamplingError(f"top_k must be >= 1 (1 = greedy), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1], got {self.top_p}")
        if not math.isfinite(self.temperature) or self.temperature < 0.0:
            raise SamplingError(f"temperature must be >= 0, got {self.temperature}")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise SamplingError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


@dataclass(frozen=True)
class RowParams:
    """Sampling parameters of a batch as per-row tensors, built once per batch."""

    top_k: Tensor  # (B,) int64, clamped to the vocabulary
    top_p: Tensor  # (B, 1)
    temperature: Tensor  # (B, 1), already max(t, 1e-5)
    penalty: Tensor  # (B, 1)
    max_top_k: int
    any_top_p: bool

    @classmethod
    def of(
        cls, params: Sequence[SamplingParams], vocab_size: int, device: torch.device | str = "cpu"
    ) -> RowParams:
        ks = [min(p.top_k, vocab_size) for p in params]

        def column(values: list[float]) -> Tensor:
            return host_to_device(torch.tensor(values, dtype=torch.float32)[:, None], device)

        return cls(
            top_k=host_to_device(torch.tensor(ks, dtype=torch.long), device),
            top_p=column([p.top_p for p in params]),
            temperature=column([max(p.temperature, 1e-5) for p in params]),
            penalty=column([p.repetition_penalty for p in params]),
            max_top_k=max(ks),
            any_top_p=any(p.top_p < 1.0 for p in params),
        )


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: Tensor) -> Tensor:
    """Penalise every token seen so far once: negative logits × p, others ÷ p."""
    scaled = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V)
    return torch.where(seen, scaled, logits)


def apply_top_p(logits: Tensor, top_p: Tensor) -> Tensor:
    """Keep the tokens whose cumulative probability, from the most likely down, stays
    within top_p, and always the most likely one (upstream's rule: the token that
    crosses top_p is dropped). Rows with top_p >= 1 are left alone, since a cumulative
    sum can round above 1.0.
    """
    ordered, order = logits.sort(dim=-1, descending=True)  # (B, V)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop = (cumulative > top_p) & (top_p < 1.0)
    drop[:, 0] = False
    drop = drop.scatter(1, order, drop)  # back to vocabulary order
    return logits.masked_fill(drop, -math.inf)


def apply_top_k(logits: Tensor, top_k: Tensor, max_top_k: int) -> Tensor:
    """Drop logits below each row's k-th largest (ties with the k-th are kept)."""
    values = logits.topk(max_top_k, dim=-1).values  # (B, K)
    pivot = values.gather(1, top_k[:, None] - 1)  # (B, 1)
    return logits.masked_fill(logits < pivot, -math.inf)


def filtered_probs(penalized: Tensor, rows: RowParams) -> Tensor:
    """Penalised logits -> probabilities: top-p, then temperature, then top-k, softmax."""
    if rows.any_top_p:
        penalized = apply_top_p(penalized, rows.top_p)
    scaled = penalized / rows.temperature
    return apply_top_k(scaled, rows.top_k, rows.max_top_k).softmax(dim=-1)  # (B, V)


def sample_from(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """argmax(p / E), E ~ Exponential(1): a categorical draw with no host sync."""
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise).argmax(dim=-1)  # (B,)


def next_token(
    logits: Tensor,
    seen: Tensor,
    rows: RowParams,
    eos: int,
    eos_allowed: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Raw logits (B, V) -> sampled tokens (B,) and whether each row stops here (B,)."""
    if not eos_allowed:
        logits = logits.index_fill(1, torch.tensor([eos], device=logits.device), -math.inf)
    penalized = apply_repetition_penalty(logits.float(), seen, rows.penalty)  # (B, V)
    token = sample_from(filtered_probs(penalized, rows), generator)
    # Upstream tests the argmax of the penalised logits, not of the raw ones.
    stop = (penalized.argmax(dim=-1) == eos) | (token == eos)  # (B,)
    return token, stop


@dataclass(frozen=True)
class DecodeStep:
    """One step of a batch: ``tokens`` (B,) sampled, ``logits`` (B, V) raw, ``emitted`` (B,)
    True where the token belongs to the output; ``alive`` is a host bool: some row goes on."""

    tokens: Tensor
    logits: Tensor
    emitted: Tensor
    alive: bool


def ensure_caches(model: Text2Semantic, batch: int, length: int) -> None:
    """Allocate the KV cache unless the current one already fits (the engine pre-sizes it)."""
    weight = model.ar_predict_layer.weight
    cache = model.k_cache
    shape = model.cache_shape
    if (
        cache is not None
        and shape is not None
        and shape[0] >= batch
        and shape[1] >= length
        and cache.dtype == weight.dtype
        and cache.device == weight.device
    ):
        return
    rounded = -(-length // _CACHE_ROUND) * _CACHE_ROUND
    model.setup_caches(batch, rounded, dtype=weight.dtype, device=weight.device)


def _prompt_seen(packed: PackedPrompt, vocab_size: int) -> Tensor:
    """(B, V) bool: which semantic ids occur in each row's prompt."""
    hits = (packed.kind == AUDIO).float()  # (B, P)
    counts = torch.zeros(packed.batch_size, vocab_size, device=hits.device)
    return counts.scatter_add_(1, packed.audio_ids, hits) > 0


@torch.no_grad()
def decode(
    model: Text2Semantic,
    packed: PackedPrompt,
    params: Sequence[SamplingParams],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    generator: torch.Generator | None = None,
) -> Iterator[DecodeStep]:
    """Prefill, then one decode step per new token until every row stopped or the cap."""
    cfg = model.config
    batch, length = packed.batch_size, packed.length
    if len(params) != batch:
        raise SamplingError(f"got {len(params)} sampling parameter sets for {batch} requests")
    longest_prompt = int((packed.kind == AUDIO).sum(1).max())
    if max_new_tokens < 1 or longest_prompt + max_new_tokens - 1 > cfg.max_positions:
        raise T2SInputError(
            f"max_new_tokens must be in [1, {cfg.max_positions - longest_prompt + 1}] for a "
            f"{longest_prompt}-token prompt, got {max_new_tokens}"
        )
    device = model.ar_predict_layer.weight.device
    packed = packed.to(device)
    ensure_caches(model, batch, length + max_new_tokens - 1)
    rows = RowParams.of(params, cfg.vocab_size, device)
    seen = _prompt_seen(packed, cfg.vocab_size)  # (B, V)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    input_pos = torch.full((batch,), length, dtype=torch.long, device=device)
    # each call gets its own backend context: one held across a ``yield`` would change
    # the process-wide SDPA flags under whatever runs while this generator waits
    with dynamic_shape_attention():
        logits = model.prefill(packed)  # (B, V)
    for step in range(max_new_tokens):
        token, stop = next_token(logits, seen, rows, cfg.eos, step >= EOS_BLOCKED_STEPS, generator)
        active = active & ~stop
        alive = step + 1 < max_new_tokens and bool(active.any())  # the one host sync per step
        yield DecodeStep(tokens=token, logits=logits, emitted=active, alive=alive)
        if not alive:
            return
        seen[torch.arange(batch, device=device), token] = True
        with dynamic_shape_attention():
            logits = model(token, input_pos)
        input_pos += 1


def _single(phone_ids: Tensor, bert: Tensor, prompt_tokens: Tensor | None) -> T2SInput:
    return T2SInput(phone_ids=phone_ids, bert=bert, prompt_tokens=prompt_tokens)


def generate_batch(
    model: Text2Semantic,
    inputs: Sequence[T2SInput],
    params: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Decode several requests together; each row stops on its own EOS.

    Returns one 1-D int64 tensor of new tokens per request, on the model's device.
    One generator drives the whole batch, so a seeded row is reproducible only with
    the same batch companions.
    """
    per_row = [params] * len(inputs) if isinstance(params, SamplingParams) else list(params)
    packed = pack_inputs(inputs, model.config)
    tokens: list[Tensor] = []
    emitted: list[Tensor] = []
    for step in decode(model, packed, per_row, max_new_tokens, generator):
        tokens.append(step.tokens)
        emitted.append(step.emitted)
    out = torch.stack(tokens, dim=1)  # (B, T)
    lengths = torch.stack(emitted, dim=1).sum(dim=1).tolist()  # emitted steps form a prefix
    return [out[row, :n] for row, n in enumerate(lengths)]


def generate(
    model: Text2Semantic,
    phone_ids: Tensor,
    bert: Tensor,
    prompt_tokens: Tensor | None = None,
    *,
    top_k: int = 15,
    top_p: float = 1.0,
    temperature: float = 1.0,
    repetition_penalty: float = 1.35,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    generator: torch.Generator | None = None,
) -> Tensor:
    """New semantic tokens (T,) for one request: phones (Lx,), bert (bert_dim, Lx), prompt (Ly,)."""
    params = SamplingParams(top_k, top_p, temperature, repetition_penalty)
    (tokens,) = generate_batch(
        model,
        [_single(phone_ids, bert, prompt_tokens)],
        params,
        max_new_tokens=max_new_tokens,
        generator=generator,
    )
    return tokens


def generate_stream(
    model: Text2Semantic,
    phone_ids: Tensor,
    bert: Tensor,
    prompt_tokens: Tensor | None = None,
    *,
    params: SamplingParams = SamplingParams(),
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    generator: torch.Generator | None = None,
    chunk_size: int = 1,
) -> Iterator[Tensor]:
    """Like ``generate`` but yields the new tokens as they come, ``chunk_size`` at a time.

    The last chunk may be shorter. Closing the iterator early stops decoding.
    """
    if chunk_size < 1:
        raise SamplingError(f"chunk_size must be >= 1, got {chunk_size}")
    packed = pack_inputs([_single(phone_ids, bert, prompt_tokens)], model.config)
    pending: list[Tensor] = []
    for step in decode(model, packed, [params], max_new_tokens, generator):
        # One row: it emitted this step's token unless the loop ends on its stop.
        if step.alive or step.emitted[0]:
            pending.append(step.tokens)
        if len(pending) == chunk_size or (pending and not step.alive):
            yield torch.cat(pending)
            pending = []
