"""GPT-SoVITS text-to-semantic model (the "GPT", s1 weights) with a static KV cache.

The module tree mirrors the official checkpoint so that its weight dict, with the
``model.`` prefix removed, loads with ``strict=True``. Everything else (the cache, the
sine tables, per-row offsets) is a non-persistent buffer.

Sequence layout. A batch row is ``[pad … | text (Lx) | prompt audio (Ly) | generated …]``:
rows are left-padded to a common prefill length ``P`` so that every decode step of every
row writes the same cache slot. Text and audio carry their own sine positions, both
starting at 0. Text attends to all text (and nothing else); audio attends to all text
and causally to audio; padding attends only to itself, which keeps it finite.

API, used by ``wyoming_sovits.generate``::

    model.setup_caches(max_batch, max_seq)            # once, or when a bigger batch comes
    packed = pack_inputs([T2SInput(...), ...], model.config)
    logits = model.prefill(packed.to(device))         # (B, V) for the first new token
    logits = model(tokens, input_pos)                 # (B,) tokens written at slots (B,)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Slot kinds of the packed prefill layout.
PAD, TEXT, AUDIO = 0, 1, 2


class T2SConfigError(ValueError):
    """The stored or requested hyper-parameters do not describe a usable model."""


class T2SInputError(ValueError):
    """A request's phone ids, BERT features or prompt tokens are malformed."""


class T2SCacheError(RuntimeError):
    """The KV cache is missing or too small for the batch or sequence asked for."""


_STORED_KEYS = (
    "vocab_size",
    "phoneme_vocab_size",
    "embedding_dim",
    "hidden_dim",
    "head",
    "n_layer",
    "EOS",
)


@dataclass(frozen=True)
class T2SConfig:
    """Hyper-parameters of the text-to-semantic transformer (defaults: v2 and later)."""

    vocab_size: int = 1025
    phoneme_vocab_size: int = 732
    embedding_dim: int = 512
    hidden_dim: int = 512
    n_head: int = 16
    linear_units: int = 2048
    n_layer: int = 24
    eos: int = 1024
    bert_dim: int = 1024
    max_positions: int = 4000
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.eos != self.vocab_size - 1:
            raise T2SConfigError(
                f"EOS must be vocab_size - 1 = {self.vocab_size - 1}, got {self.eos}"
            )
        if self.embedding_dim != self.hidden_dim:
            raise T2SConfigError(
                f"embedding_dim ({self.embedding_dim}) must equal hidden_dim ({self.hidden_dim})"
            )
        if self.hidden_dim % self.n_head or self.hidden_dim % 2:
            raise T2SConfigError(
                f"hidden_dim {self.hidden_dim} must be even and divisible by n_head {self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.n_head

    @classmethod
    def v2(cls) -> T2SConfig:
        """v2, v2Pro, v2ProPlus, v3 and v4 (732 phoneme symbols)."""
        return cls()

    @classmethod
    def v1(cls) -> T2SConfig:
        """v1: same network, 512 phoneme rows (322 used)."""
        return cls(phoneme_vocab_size=512)

    @classmethod
    def from_stored(cls, model_cfg: Mapping[str, Any]) -> T2SConfig:
        """Build from the dict an s1 checkpoint stores under ``config["model"]``.

        ``dropout`` and ``random_bert`` only matter for training. ``linear_units`` is
        ignored like upstream does: its feed-forward width is always 4 × hidden_dim.
        """
        missing = [k for k in _STORED_KEYS if k not in model_cfg]
        if missing:
            raise T2SConfigError(
                f"s1 config['model'] lacks {missing}; expected keys {list(_STORED_KEYS)}"
            )
        hidden = int(model_cfg["hidden_dim"])
        return cls(
            vocab_size=int(model_cfg["vocab_size"]),
            phoneme_vocab_size=int(model_cfg["phoneme_vocab_size"]),
            embedding_dim=int(model_cfg["embedding_dim"]),
            hidden_dim=hidden,
            n_head=int(model_cfg["head"]),
            linear_units=4 * hidden,
            n_layer=int(model_cfg["n_layer"]),
            eos=int(model_cfg["EOS"]),
        )


@dataclass(frozen=True)
class T2SInput:
    """One request: target phones (with the reference text's phones first) and its prompt.

    ``phone_ids`` (Lx,) int64, ``bert`` (bert_dim, Lx) float, ``prompt_tokens`` (Ly,)
    int64 semantic tokens of the reference clip, or ``None`` for reference-free mode.
    ``bert_zeros``: the caller knows ``bert`` is all zeros (every language but Chinese),
    so packing neither reads nor copies it.
    """

    phone_ids: Tensor
    bert: Tensor
    prompt_tokens: Tensor | None = None
    bert_zeros: bool = False

    @property
    def prompt_len(self) -> int:
        return 0 if self.prompt_tokens is None else int(self.prompt_tokens.shape[0])


@dataclass(frozen=True)
class PackedPrompt:
    """A left-padded prefill batch; every tensor is (B, P) except ``bert`` (B, P, bert_dim)."""

    text_ids: Tensor
    bert: Tensor
    audio_ids: Tensor
    kind: Tensor
    positions: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.kind.shape[0])

    @property
    def length(self) -> int:
        return int(self.kind.shape[1])

    def to(self, device: torch.device | str) -> PackedPrompt:
        return PackedPrompt(
            text_ids=self.text_ids.to(device),
            bert=self.bert.to(device),
            audio_ids=self.audio_ids.to(device),
            kind=self.kind.to(device),
            positions=self.positions.to(device),
        )


def check_input(i: int, item: T2SInput, config: T2SConfig) -> None:
    """Reject what would otherwise fail deep inside an embedding or a matmul (request
    ``i`` of a batch, as the message names it)."""
    ids, bert = item.phone_ids, item.bert
    if ids.ndim != 1 or ids.numel() == 0 or ids.dtype.is_floating_point:
        raise T2SInputError(f"request {i}: phone_ids must be a non-empty 1-D integer tensor")
    if tuple(bert.shape) != (config.bert_dim, ids.shape[0]):
        raise T2SInputError(
            f"request {i}: bert must be ({config.bert_dim}, {ids.shape[0]}), got {tuple(bert.shape)}"
        )
    if int(ids.min()) < 0 or int(ids.max()) >= config.phoneme_vocab_size:
        raise T2SInputError(f"request {i}: phone ids must lie in [0, {config.phoneme_vocab_size})")
    if ids.shape[0] > config.max_positions:
        raise T2SInputError(f"request {i}: {ids.shape[0]} phones exceed {config.max_positions}")
    tokens = item.prompt_tokens
    if tokens is not None and tokens.numel() > 0:
        if tokens.ndim != 1 or tokens.dtype.is_floating_point:
            raise T2SInputError(f"request {i}: prompt_tokens must be a 1-D integer tensor")
        if int(tokens.min()) < 0 or int(tokens.max()) >= config.eos:
            raise T2SInputError(f"request {i}: prompt tokens must lie in [0, {config.eos})")


def host_to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """A host tensor on ``device`` without waiting for the GPU: to CUDA through pinned
    memory and an asynchronous copy (a copy from pageable memory first waits for every
    kernel queued before it). PyTorch keeps the pinned block until the copy has run."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def pack_inputs(
    inputs: Sequence[T2SInput],
    config: T2SConfig,
    device: torch.device | str = "cpu",
    *,
    checked: bool = False,
) -> PackedPrompt:
    """Validate requests and left-pad them into one prefill batch on ``device``.

    The BERT features, the bulk of it, are padded where they will be read: each request's
    (bert_dim, Lx) goes to the device once, into a zeroed batch allocated there, and not at
    all when it is zeros (every language but Chinese gets zeros). ``checked``: the caller
    has already passed each request through ``check_input``."""
    if not inputs:
        raise T2SInputError("pack_inputs needs at least one request")
    for i, item in enumerate(inputs):
        if not checked:
            check_input(i, item, config)
    lengths = [int(item.phone_ids.shape[0]) + item.prompt_len for item in inputs]
    batch, total = len(inputs), max(lengths)
    ints = np.zeros((4, batch, total), dtype=np.int64)  # text ids, audio ids, kind, positions
    ints[2] = PAD
    bert = torch.zeros(batch, total, config.bert_dim, dtype=torch.float32, device=device)
    for row, (item, length) in enumerate(zip(inputs, lengths, strict=True)):
        lx, start = int(item.phone_ids.shape[0]), total - length
        text = slice(start, start + lx)
        ints[0, row, text] = item.phone_ids.detach().cpu().numpy()
        ints[2, row, text] = TEXT
        ints[3, row, text] = np.arange(lx)
        if not item.bert_zeros and bool(item.bert.any()):  # zeros stay: the batch is zeroed
            bert[row, text] = item.bert.detach().to(device, torch.float32).T  # (Lx, bert_dim)
        if item.prompt_tokens is not None and item.prompt_len:
            audio = slice(start + lx, total)
            ints[1, row, audio] = item.prompt_tokens.detach().cpu().numpy()
            ints[2, row, audio] = AUDIO
            ints[3, row, audio] = np.arange(item.prompt_len)
    text_ids, audio_ids, kind, positions = host_to_device(torch.from_numpy(ints), device).unbind(0)
    return PackedPrompt(text_ids, bert, audio_ids, kind, positions)


def merge_packed(parts: Sequence[PackedPrompt], length: int = 0) -> PackedPrompt:
    """Packed batches (same device) as one, every row left-padded to the longest (or to
    ``length`` slots when that is longer)."""
    total = max(length, *(p.length for p in parts))

    def pad(t: Tensor, value: int) -> Tensor:
        widths = (0, 0) if t.ndim == 3 else ()
        return F.pad(t, (*widths, total - t.shape[1], 0), value=value)

    return PackedPrompt(
        text_ids=torch.cat([pad(p.text_ids, 0) for p in parts]),
        bert=torch.cat([pad(p.bert, 0) for p in parts]),
        audio_ids=torch.cat([pad(p.audio_ids, 0) for p in parts]),
        kind=torch.cat([pad(p.kind, PAD) for p in parts]),
        positions=torch.cat([pad(p.positions, 0) for p in parts]),
    )


def prefill_mask(kind: Tensor) -> Tensor:
    """(B, P) slot kinds -> (B, 1, P, P) bool, True where a query may attend a key."""
    length = kind.shape[1]
    idx = torch.arange(length, device=kind.device)
    causal = idx[:, None] >= idx[None, :]  # (P, P)
    query, key = kind[:, :, None], kind[:, None, :]  # (B, P, 1), (B, 1, P)
    sees_text = (query != PAD) & (key == TEXT)
    sees_audio = (query == AUDIO) & (key == AUDIO) & causal
    itself = torch.eye(length, dtype=torch.bool, device=kind.device)  # keeps pad rows finite
    return (sees_text | sees_audio | itself)[:, None]  # (B, 1, P, P)


def _sine_table(length: int, dim: int) -> Tensor:
    """(length, dim) table: even columns sin(p·w_i), odd columns cos(p·w_i), w_i = 10000^(-2i/dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class TokenEmbedding(nn.Module):
    """Wrapper kept only so the weight is named ``…word_embeddings.weight`` as stored."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)

    def forward(self, ids: Tensor) -> Tensor:
        return self.word_embeddings(ids)


class SinePositions(nn.Module):
    """``x + alpha · table[pos]``: a fixed sine table scaled by one learned scalar."""

    pe: Tensor

    def __init__(self, dim: int, max_positions: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.register_buffer("pe", _sine_table(max_positions, dim), persistent=False)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return x + self.alpha * self.pe[pos]  # (B, T, D)


class SelfAttention(nn.Module):
    """Multi-head attention with packed q, k, v projections (``in_proj_*``, q first)."""

    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self, x: Tensor, mask: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor | None
    ) -> Tensor:
        """Prefill (``input_pos`` None) fills slots [0, T); a step writes slot input_pos[b]."""
        batch, length, dim = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3D)
        heads = (batch, length, self.n_head, self.head_dim)
        q, k, v = (t.reshape(heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))  # (B, H, T, Dh)
        if input_pos is None:
            k_cache[:, :, :length] = k
            v_cache[:, :, :length] = v
        else:
            rows = torch.arange(batch, device=x.device)
            k_cache[rows, :, input_pos] = k[:, :, 0]  # (B, H, Dh)
            v_cache[rows, :, input_pos] = v[:, :, 0]
            k, v = k_cache, v_cache  # (B, H, S, Dh)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))  # (B, T, D)


class Block(nn.Module):
    """Post-norm transformer layer: LN(x + attn(x)), then LN(x + W2·relu(W1·x))."""

    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.self_attn = SelfAttention(config)
        self.linear1 = nn.Linear(dim, config.linear_units)
        self.linear2 = nn.Linear(config.linear_units, dim)
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)

    def forward(
        self, x: Tensor, mask: Tensor, k_cache: Tensor, v_cache: Tensor, input_pos: Tensor | None
    ) -> Tensor:
        x = self.norm1(x + self.self_attn(x, mask, k_cache, v_cache, input_pos))  # (B, T, D)
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))  # (B, T, D)


class Stack(nn.Module):
    """Holds the layers under ``h.layers.N`` as the checkpoint names them."""

    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))


class Text2Semantic(nn.Module):
    """Phones + BERT + prompt semantic tokens -> logits of the next semantic token."""

    k_cache: Tensor | None
    v_cache: Tensor | None
    row_start: Tensor | None
    audio_start: Tensor | None

    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_dim
        self.bert_proj = nn.Linear(config.bert_dim, dim)
        self.ar_text_embedding = TokenEmbedding(config.phoneme_vocab_size, dim)
        self.ar_text_position = SinePositions(dim, config.max_positions)
        self.ar_audio_embedding = TokenEmbedding(config.vocab_size, dim)
        self.ar_audio_position = SinePositions(dim, config.max_positions)
        self.h = Stack(config)
        self.ar_predict_layer = nn.Linear(dim, config.vocab_size, bias=False)
        for name in ("k_cache", "v_cache", "row_start", "audio_start"):
            self.register_buffer(name, None, persistent=False)

    @property
    def cache_shape(self) -> tuple[int, int] | None:
        """(max_batch, max_seq) of the allocated cache, or None before ``setup_caches``."""
        if self.k_cache is None:
            return None
        return int(self.k_cache.shape[1]), int(self.k_cache.shape[3])

    def setup_caches(
        self,
        max_batch: int,
        max_seq: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """Allocate the static cache (replacing any earlier one); defaults: the weights' dtype/device."""
        if max_batch < 1 or max_seq < 1:
            raise T2SCacheError(f"max_batch and max_seq must be >= 1, got {max_batch}, {max_seq}")
        weight = self.ar_predict_layer.weight
        dtype, device = dtype or weight.dtype, device or weight.device
        cfg = self.config
        shape = (cfg.n_layer, max_batch, cfg.n_head, max_seq, cfg.head_dim)  # (L, B, H, S, Dh)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.row_start = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.audio_start = torch.zeros(max_batch, dtype=torch.long, device=device)

    def embed_prompt(self, packed: PackedPrompt) -> Tensor:
        """(B, P, D) input of the prefill: text + BERT + text positions, audio + audio positions."""
        bert = packed.bert.to(self.bert_proj.weight.dtype)
        text = self.ar_text_embedding(packed.text_ids) + self.bert_proj(bert)  # (B, P, D)
        text = self.ar_text_position(text, packed.positions)
        audio = self.ar_audio_embedding(packed.audio_ids)  # (B, P, D)
        audio = self.ar_audio_position(audio, packed.positions)
        kind = packed.kind[..., None]  # (B, P, 1)
        return torch.where(kind == TEXT, text, torch.where(kind == AUDIO, audio, 0.0))

    def _caches(self, batch: int, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.k_cache is None or self.v_cache is None:
            raise T2SCacheError("call setup_caches(max_batch, max_seq) before prefill/decode")
        assert self.row_start is not None and self.audio_start is not None
        max_batch, max_seq = self.k_cache.shape[1], self.k_cache.shape[3]
        if batch > max_batch or length > max_seq:
            raise T2SCacheError(
                f"cache holds batch {max_batch} × {max_seq} slots; need {batch} × {length}: "
                "call setup_caches with larger sizes"
            )
        return self.k_cache, self.v_cache, self.row_start, self.audio_start

    def prefill(
        self, packed: PackedPrompt, row: int = 0, rows: Sequence[int] | None = None
    ) -> Tensor:
        """Run the whole prompt, fill cache slots [0, P) of cache rows [row, row + B) (or
        of the cache rows listed in ``rows``, one per request); return (B, V) next-token
        logits. ``row`` > 0 or ``rows`` admit requests into a running batch."""
        batch, length = packed.batch_size, packed.length
        if rows is not None and len(rows) != batch:
            raise T2SInputError(f"{batch} requests need {batch} cache rows; got {len(rows)}")
        highest = row + batch if rows is None else max(rows) + 1
        k_cache, v_cache, row_start, audio_start = self._caches(highest, length)
        x = self.embed_prompt(packed)  # (B, P, D)
        mask = prefill_mask(packed.kind)  # (B, 1, P, P)
        index: slice | Tensor = slice(row, row + batch)
        if rows is not None:
            index = torch.tensor(list(rows), dtype=torch.long, device=k_cache.device)
            shape = (batch, *k_cache.shape[2:3], length, *k_cache.shape[4:])
            k_rows = k_cache.new_empty(shape)  # scattered into the cache after each layer
            v_rows = v_cache.new_empty(shape)
        for i, layer in enumerate(self.h.layers):
            if rows is None:
                x = layer(x, mask, k_cache[i, index], v_cache[i, index], None)
                continue
            x = layer(x, mask, k_rows, v_rows, None)
            k_cache[i, index, :, :length] = k_rows
            v_cache[i, index, :, :length] = v_rows
        row_start[index] = (packed.kind == PAD).sum(1)
        audio_start[index] = length - (packed.kind == AUDIO).sum(1)
        return self.ar_predict_layer(x[:, -1])  # (B, V)

    def forward(self, tokens: Tensor, input_pos: Tensor, kv_len: int | None = None) -> Tensor:
        """One decode step with fixed shapes: tokens (B,) go to cache slots input_pos (B,).

        The audio position of each row is its slot minus where its audio began, so rows
        with different prompt lengths share slots. No host sync, no data-dependent branch.
        ``kv_len`` (optional) attends over cache slots [0, kv_len) only; the caller
        guarantees every input_pos < kv_len (a CUDA-graph runner buckets it).
        """
        batch = tokens.shape[0]
        k_cache, v_cache, row_start, audio_start = self._caches(batch, 1)
        seq = k_cache.shape[3] if kv_len is None else min(kv_len, k_cache.shape[3])
        audio_pos = (input_pos - audio_start[:batch])[:, None]  # (B, 1)
        x = self.ar_audio_position(self.ar_audio_embedding(tokens[:, None]), audio_pos)  # (B, 1, D)
        slots = torch.arange(seq, device=tokens.device)  # (S,)
        visible = (slots >= row_start[:batch, None]) & (slots <= input_pos[:, None])  # (B, S)
        mask = visible[:, None, None, :]  # (B, 1, 1, S)
        for i, layer in enumerate(self.h.layers):
            x = layer(x, mask, k_cache[i, :batch, :, :seq], v_cache[i, :batch, :, :seq], input_pos)
        return self.ar_predict_layer(x[:, 0])  # (B, V)
