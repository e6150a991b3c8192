"""GPU fast paths: the T2S decode step (sampling included) and SoVITS decode as CUDA graphs.

An engine choice, not a fork: both runners drive the unchanged model modules
(``Text2Semantic.forward``, the stages of ``SoVITS.decode``) and the samplers of
``generate``; they only fix every shape and keep every tensor the step touches at a static
address, so that the whole step can be captured once and replayed.

T2S. One captured graph holds ``steps_per_sync`` decode steps: the EOS bar (a step-counter
tensor instead of ``generate``'s Python counter), repetition penalty, top-k/top-p,
temperature, the exponential-race draw, the stop rule, the token log and the next forward.
The host syncs once per replay to see whether any row is still active; rows that stopped
keep stepping harmlessly and their tokens are not counted. Attention reads only a prefix
of the static cache, bucketed to ``kv_bucket`` slots (one graph per bucket in use).
Random draws use the default CUDA generator (graph-safe), so seed with
``torch.cuda.manual_seed``.

SoVITS. ``SoVITSGraphs`` captures ``SoVITS.decode`` per (token bucket, phone bucket) with
length tensors, so any utterance up to the largest bucket replays a graph. Padded phones
are exact (masked attention); padded codes are made exact by zeroing every vocoder
convolution's input past the real length inside the graph (the vocoder itself has no
mask; unmasked, the last ~100 ms would change). The prior noise is an input
buffer (the caller's, or drawn from the default CUDA generator), so that re-decoding a
growing prefix can reuse the same noise. ``SoVITSGraphs.decode_windows`` serves streamed
decodes of several rows: the text encoder and flow of the whole prefixes in one graph,
then the vocoder only over each row's unsent frames in another.

Prefill. ``PrefillGraphs`` captures ``Text2Semantic.prefill`` of one request per prompt
length bucket: the prompt is left-padded to the bucket, as a batched prefill pads its
shorter rows (``batching.ContinuousBatcher`` uses it for a one-row batch).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .generate import (
    DEFAULT_MAX_NEW_TOKENS,
    EOS_BLOCKED_STEPS,
    RowParams,
    SamplingError,
    SamplingParams,
    dynamic_shape_attention,
    next_token,
)
from .models.t2s import (
    AUDIO,
    PackedPrompt,
    T2SInput,
    T2SInputError,
    Text2Semantic,
    host_to_device,
    merge_packed,
    pack_inputs,
)
from .models.vits import SoVITS, VitsInputError, VocoderWindows

if TYPE_CHECKING:
    from torch.cuda import _POOL_HANDLE as _PoolHandle

TOP_K_CAP = 64
"""Largest top_k a graph serves; the captured top-k keeps this many candidates per row."""

# Vocoder window buckets of ``SoVITSGraphs.decode_windows`` (latent frames). The streamed
# decodes at 12, 36, 72, 144 and 240 tokens vocode windows of 24, 68, 92, 164 and 212 frames
# of prefixes of 24, 72, 144, 288 and 480: each fits a bucket no wider than its prefix, so
# its windows fill the bucket and its vocoder graph needs no masks.
WINDOW_BUCKETS = (24, 32, 48, 72, 96, 128, 176, 224, 288, 384, 512, 768, 1024)
# What a graph's capture costs in ``SoVITSGraphs.price``: 0.2 to 0.3 s on the H200, the time
# its vocoder takes for about this many latent frames (64 x 68 frames in 90 ms).
CAPTURE_FRAMES = 12288
# CUDA stream priorities (lower is higher; the default stream has 0): the SoVITS work's,
# and that of a batch's GPT replays where the decodes overlap them (``gpt_stream``).
DECODE_STREAM_PRIORITY = -1
GPT_STREAM_PRIORITY = -2

_DEFAULT_PARAMS = SamplingParams()


_LOGGER = logging.getLogger(__name__)


class FastPathError(RuntimeError):
    """The fast path cannot serve this request (no CUDA, batch/length beyond its buffers)."""


def _require_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise FastPathError(f"CUDA graphs need the model on a CUDA device, not {device}")


@dataclass
class _DecodeState:
    """Every tensor a captured step reads or writes, allocated once at the runner's size."""

    logits: Tensor  # (B, V) float32: logits for the token about to be sampled
    seen: Tensor  # (B, V) bool: repetition-penalty set
    active: Tensor  # (B,) bool
    n_emitted: Tensor  # (B,) int64
    out: Tensor  # (B, max_new) int64 token log
    input_pos: Tensor  # (B,) int64 cache slot of the next forward
    step: Tensor  # (1,) int64 step counter (EOS bar, token-log column)
    limit: Tensor  # (1,) int64 max_new_tokens of the current run
    last_slot: Tensor  # (1,) int64 highest cache slot the current run may write
    forced: Tensor  # (B, max_new) int64 teacher-forcing tokens
    top_k: Tensor  # (B,) int64
    top_p: Tensor  # (B, 1)
    temperature: Tensor  # (B, 1)
    penalty: Tensor  # (B, 1)

    @classmethod
    def allocate(cls, batch: int, vocab: int, max_new: int, device: torch.device) -> _DecodeState:
        def z(*shape: int, dtype: torch.dtype = torch.long) -> Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(
            logits=z(batch, vocab, dtype=torch.float32),
            seen=z(batch, vocab, dtype=torch.bool),
            active=z(batch, dtype=torch.bool),
            n_emitted=z(batch),
            out=z(batch, max_new),
            input_pos=z(batch),
            step=z(1),
            limit=z(1),
            last_slot=z(1),
            forced=z(batch, max_new),
            top_k=torch.ones(batch, dtype=torch.long, device=device),
            top_p=torch.ones(batch, 1, device=device),
            temperature=torch.ones(batch, 1, device=device),
            penalty=torch.ones(batch, 1, device=device),
        )


class T2SGraphRunner:
    """Batched GPT decoding with the step (sampling included) replayed from CUDA graphs.

    ``max_batch`` rows and ``max_seq`` cache slots are allocated once (the runner owns the
    model's cache). A batch of ``n <= max_batch`` requests uses rows [0, n); graphs are
    captured lazily per (n, kv bucket, top-p on/off) and kept.
    """

    def __init__(
        self,
        model: Text2Semantic,
        max_batch: int = 1,
        max_seq: int = 2048,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        steps_per_sync: int = 8,
        kv_bucket: int = 256,
        forward: Callable[..., Tensor] | None = None,
        use_graphs: bool = True,
        attention: Sequence[SDPBackend] | None = None,
    ) -> None:
        """``forward`` replaces ``model(tokens, input_pos, kv_len=...)`` (e.g. torch.compile of
        it); ``use_graphs=False`` runs the same step eagerly (CPU tests, debugging);
        ``attention`` restricts the SDPA backends the captured step may use."""
        weight = model.ar_predict_layer.weight
        if use_graphs:
            _require_cuda(weight.device)
        self.use_graphs = use_graphs
        self._attention = list(attention) if attention else None
        if steps_per_sync < 1 or kv_bucket < 1 or max_new_tokens < 1:
            raise FastPathError("steps_per_sync, kv_bucket and max_new_tokens must be >= 1")
        self.model = model
        self._forward = forward or model
        self.cfg = model.config
        self.max_batch, self.max_seq = max_batch, max_seq
        self.max_new_tokens = max_new_tokens
        self.steps_per_sync, self.kv_bucket = steps_per_sync, kv_bucket
        self.device = weight.device
        model.setup_caches(max_batch, max_seq, dtype=weight.dtype, device=weight.device)
        self._cache_ptr = self._cache_data_ptr()
        self.state = _DecodeState.allocate(
            max_batch, self.cfg.vocab_size, max_new_tokens, self.device
        )
        self._eos_col = torch.zeros(1, self.cfg.vocab_size, dtype=torch.bool, device=self.device)
        self._eos_col[0, self.cfg.eos] = True
        self._graphs: dict[tuple[int, int, bool, bool], torch.cuda.CUDAGraph] = {}
        if use_graphs:
            self._pool = torch.cuda.graph_pool_handle()
            self._stream = torch.cuda.Stream(device=self.device)

    # -- the captured step ------------------------------------------------------------
    def _rows(self, batch: int, any_top_p: bool) -> RowParams:
        s = self.state
        return RowParams(
            top_k=s.top_k[:batch],
            top_p=s.top_p[:batch],
            temperature=s.temperature[:batch],
            penalty=s.penalty[:batch],
            max_top_k=min(TOP_K_CAP, self.cfg.vocab_size),
            any_top_p=any_top_p,
        )

    def _step(self, batch: int, kv_len: int, any_top_p: bool, forced: bool) -> None:
        """One decode step on the state's first ``batch`` rows; no host sync, fixed shapes."""
        s, eos = self.state, self.cfg.eos
        logits = s.logits[:batch]  # (B, V)
        barred = self._eos_col & (s.step < EOS_BLOCKED_STEPS)  # (1, V)
        seen = s.seen[:batch]
        token, stop = next_token(
            logits.masked_fill(barred, -math.inf), seen, self._rows(batch, any_top_p), eos, True
        )  # (B,), (B,)
        column = s.step.clamp(max=s.out.shape[1] - 1)  # (1,)
        if forced:
            token = s.forced[:batch].index_select(1, column)[:, 0]  # (B,)
        emitted = s.active[:batch] & ~stop & (s.step < s.limit)  # (B,)
        s.out[:batch].index_copy_(1, column, token[:, None])
        s.n_emitted[:batch] += emitted
        s.active[:batch] = emitted
        seen.scatter_(1, token[:, None], True)
        pos = torch.minimum(s.input_pos[:batch], s.last_slot)  # (B,)
        logits.copy_(self._forward(token, pos, kv_len=kv_len))
        s.input_pos[:batch] += 1
        s.step += 1

    def _graph(
        self, batch: int, kv_len: int, any_top_p: bool, forced: bool
    ) -> torch.cuda.CUDAGraph:
        key = (batch, kv_len, any_top_p, forced)
        if not self.owns_cache():
            raise FastPathError("the model's KV cache was reallocated; build a new runner")
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        steps = 1 if forced else self.steps_per_sync
        backends = sdpa_kernel(self._attention) if self._attention else contextlib.nullcontext()
        with torch.no_grad(), backends:
            graph = self._capture(batch, kv_len, any_top_p, forced, steps)
        self._graphs[key] = graph
        return graph

    def _capture(
        self, batch: int, kv_len: int, any_top_p: bool, forced: bool, steps: int
    ) -> torch.cuda.CUDAGraph:
        saved = {name: t.clone() for name, t in vars(self.state).items()}
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):  # warm-up off the capture (cuBLAS handles etc.)
            for _ in range(2):
                self._step(batch, kv_len, any_top_p, forced)
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        graph = torch.cuda.CUDAGraph()
        with capturing(graph, self.device, self._stream, self._pool):
            for _ in range(steps):
                self._step(batch, kv_len, any_top_p, forced)
        for name, t in vars(self.state).items():  # warm-up wrote the state; restore it
            t.copy_(saved[name])
        return graph

    def _cache_data_ptr(self) -> int:
        cache = self.model.k_cache
        return -1 if cache is None else cache.data_ptr()

    def _replay(self, batch: int, kv_len: int, any_top_p: bool, forced: bool) -> None:
        if self.use_graphs:
            self._graph(batch, kv_len, any_top_p, forced).replay()
            return
        for _ in range(1 if forced else self.steps_per_sync):
            self._step(batch, kv_len, any_top_p, forced)

    def capture(
        self, batch: int, prompt_len: int, max_new_tokens: int, any_top_p: bool = False
    ) -> int:
        """Capture ahead of time every graph such a run would use; returns how many exist."""
        for kv_len in self._kv_lengths(prompt_len, max_new_tokens):
            self._graph(batch, kv_len, any_top_p, False)
        return len(self._graphs)

    def _kv_lengths(self, prompt_len: int, max_new: int) -> list[int]:
        steps = range(0, max_new, self.steps_per_sync)
        return sorted({self._replay_kv_len(prompt_len, done, max_new) for done in steps})

    def _replay_kv_len(self, prompt_len: int, done: int, max_new: int) -> int:
        """Cache prefix a replay starting at step ``done`` needs: past its highest slot."""
        last = prompt_len + min(done + self.steps_per_sync, max_new) - 1
        return self._bucket(last)

    def _bucket(self, pos: int) -> int:
        return min(self.max_seq, (pos // self.kv_bucket + 1) * self.kv_bucket)

    # -- running ----------------------------------------------------------------------
    def _start(
        self, packed: PackedPrompt, params: Sequence[SamplingParams], max_new: int
    ) -> tuple[int, int]:
        batch, length = packed.batch_size, packed.length
        if len(params) != batch:
            raise SamplingError(f"got {len(params)} sampling parameter sets for {batch} requests")
        if batch > self.max_batch or length + max_new > self.max_seq:
            raise FastPathError(
                f"runner holds {self.max_batch} rows x {self.max_seq} slots; "
                f"need {batch} x {length + max_new}"
            )
        longest_prompt = int((packed.kind == AUDIO).sum(1).max())
        if not 1 <= max_new <= self.max_new_tokens or (
            longest_prompt + max_new - 1 > self.cfg.max_positions
        ):
            raise T2SInputError(
                f"max_new_tokens must be in [1, {self.max_new_tokens}] and fit "
                f"{self.cfg.max_positions} positions with a {longest_prompt}-token prompt"
            )
        if any(p.top_k > TOP_K_CAP for p in params):
            raise SamplingError(f"the graph path serves top_k <= {TOP_K_CAP}")
        packed = packed.to(self.device)
        rows = RowParams.of(params, self.cfg.vocab_size, self.device)
        s = self.state
        s.top_k[:batch] = rows.top_k
        s.top_p[:batch] = rows.top_p
        s.temperature[:batch] = rows.temperature
        s.penalty[:batch] = rows.penalty
        hits = (packed.kind == AUDIO).float()  # (B, P)
        counts = torch.zeros(batch, self.cfg.vocab_size, device=self.device)
        s.seen[:batch] = counts.scatter_add_(1, packed.audio_ids, hits) > 0
        s.active[:batch] = True
        s.n_emitted[:batch] = 0
        s.input_pos[:batch] = length
        s.step.zero_()
        s.limit.fill_(max_new)
        s.last_slot.fill_(length + max_new - 1)
        with torch.no_grad(), dynamic_shape_attention():
            s.logits[:batch] = self.model.prefill(packed).float()  # (B, V)
        return batch, length

    @torch.no_grad()
    def stream_packed(
        self,
        packed: PackedPrompt,
        params: Sequence[SamplingParams],
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> Generator[tuple[Tensor, Tensor], None, None]:
        """Prefill eagerly, then replay graphs until every row stopped or the cap.

        After each replay yields views ``(out (B, done), n_emitted (B,))`` of the token log:
        row b's tokens so far are ``out[b, :n_emitted[b]]``. The views are the runner's own
        buffers, overwritten by the next run; closing the iterator stops decoding.
        """
        batch, length = self._start(packed, params, max_new_tokens)
        any_top_p = any(p.top_p < 1.0 for p in params)
        s, done = self.state, 0
        while done < max_new_tokens:
            kv_len = self._replay_kv_len(length, done, max_new_tokens)
            self._replay(batch, kv_len, any_top_p, False)
            done += self.steps_per_sync
            alive = bool(s.active[:batch].any())  # the one host sync per replay
            yield s.out[:batch, : min(done, max_new_tokens)], s.n_emitted[:batch]
            if not alive:
                return

    def stream_tokens(
        self,
        packed: PackedPrompt,
        params: SamplingParams,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> Iterator[Tensor]:
        """One request (batch 1): its new tokens (1-D, on the device, copies) after each
        replay that emitted any, at most ``steps_per_sync`` at a time."""
        if packed.batch_size != 1:
            raise FastPathError(f"stream_tokens serves one request, got {packed.batch_size}")
        sent = 0
        for out, n_emitted in self.stream_packed(packed, [params], max_new_tokens):
            count = int(n_emitted[0])
            if count > sent:
                yield out[0, sent:count].clone()
                sent = count

    def generate_packed(
        self,
        packed: PackedPrompt,
        params: Sequence[SamplingParams],
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_tokens: Callable[[Tensor, Tensor], bool] | None = None,
    ) -> list[Tensor]:
        """Prefill eagerly, then replay graphs until every row stopped or the cap.

        ``on_tokens(out (B, done), n_emitted (B,))`` runs after each replay (streaming);
        returning False stops early. Returns each row's emitted tokens (1-D, on the GPU).
        """
        steps = self.stream_packed(packed, params, max_new_tokens)
        try:
            for out, n_emitted in steps:
                if on_tokens is not None and not on_tokens(out, n_emitted):
                    break
        finally:
            steps.close()
        counts = self.state.n_emitted[: packed.batch_size].tolist()
        return [self.state.out[row, :n].clone() for row, n in enumerate(counts)]

    def owns_cache(self) -> bool:
        """False once someone reallocated the model's KV cache (the graphs point at the old
        one): build a new runner then."""
        return self._cache_data_ptr() == self._cache_ptr

    def generate_batch(
        self,
        inputs: Sequence[T2SInput],
        params: SamplingParams | Sequence[SamplingParams] = _DEFAULT_PARAMS,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> list[Tensor]:
        """Same contract as ``generate.generate_batch`` (without a generator argument)."""
        per_row = [params] * len(inputs) if isinstance(params, SamplingParams) else list(params)
        packed = pack_inputs(inputs, self.cfg)
        return self.generate_packed(packed, per_row, max_new_tokens)

    @torch.no_grad()
    def teacher_forced_logits(self, packed: PackedPrompt, tokens: Tensor) -> Tensor:
        """Logits (B, T, V) float32 before each of T forced steps (step 0: the prefill's).

        ``tokens`` (B, T) are fed instead of the samples, through graphs of the same step.
        """
        batch, steps = tokens.shape
        params = [SamplingParams(top_k=1)] * batch
        _, length = self._start(packed, params, steps)
        s = self.state
        s.forced[:batch, :steps] = tokens.to(self.device)
        out = []
        for done in range(steps):
            out.append(s.logits[:batch].clone())
            self._replay(batch, self._bucket(length + done), False, True)
        return torch.stack(out, dim=1)  # (B, T, V)


@contextlib.contextmanager
def capturing(
    graph: torch.cuda.CUDAGraph,
    device: torch.device,
    stream: torch.cuda.Stream | None = None,
    pool: _PoolHandle | None = None,
) -> Iterator[None]:
    """``torch.cuda.graph`` that leaves the device usable when the capture raises, and
    that the garbage collector does not run inside.

    A capture marks the default generator of its device as capturing, and only a capture
    that ends clears the mark: after one that raised, every random draw outside a capture
    raises ("Offset increment outside graph capture"), sampling and the replays of graphs
    that draw included. So on a failure one tiny capture that ends runs before the error
    goes on; it clears the mark on the generator state that earlier graphs share.

    Graphs held in reference cycles (a batch and its row streams) are freed by the garbage
    collector, whenever it runs, in whichever thread: one run during a capture destroys
    them mid-capture, which CUDA refuses ("operation not permitted when stream is
    capturing"), and the capture's memory pool was left recording, so the next capture
    failed ("already recording to mempool_id"; H200, 64 streams, bench/README). So the
    collector is off while a capture runs (it is process-wide: the event loop's thread too).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        with torch.cuda.graph(graph, pool=pool, stream=stream):
            yield
    except BaseException:
        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                one = torch.zeros(1, device=device)
            with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=side):
                one.add_(1)
        except Exception as err:  # the capture's own error is the one to report
            _LOGGER.warning("could not clear the generator after a failed capture: %s", err)
        raise
    finally:
        if collecting:
            gc.enable()


class PrefillGraphs:
    """``Text2Semantic.prefill`` of one request into cache row 0, replayed from a CUDA
    graph per prompt-length bucket (the eager prefill is ~360 launches: 11 to 15 ms for a
    230-slot prompt on the H200).

    The prompt is left-padded to a multiple of ``bucket`` slots, as a batched prefill
    pads its shorter rows: padding slots attend only to themselves and no real slot sees
    them, and the cache's row start skips them in every later step. The request then
    holds the padded length's slots. Graphs are dropped when the model's cache is
    replaced. ``use_graphs`` False runs the same padded prefill eagerly (CPU tests); a
    capture that fails turns the graphs off for good (logged) and the prefill runs
    eagerly.
    """

    def __init__(self, model: Text2Semantic, bucket: int = 64, use_graphs: bool = True) -> None:
        if bucket < 1:
            raise FastPathError(f"prefill bucket must be >= 1, got {bucket}")
        self.model, self.bucket, self.use_graphs = model, bucket, use_graphs
        self.failed: str | None = None  # why the graphs were turned off
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, PackedPrompt, Tensor]] = {}
        self._cache_ptr = -1
        if use_graphs:
            _require_cuda(model.ar_predict_layer.weight.device)
            self._pool = torch.cuda.graph_pool_handle()

    def padded(self, length: int) -> int:
        """The slots a prompt of ``length`` slots holds once padded to its bucket."""
        return -(-length // self.bucket) * self.bucket

    @property
    def captured(self) -> list[int]:
        return sorted(self._graphs)

    @torch.no_grad()
    def __call__(self, packed: PackedPrompt) -> tuple[Tensor, int]:
        """Prefill ``packed`` (one request, on the model's device) into cache row 0; returns
        the (1, V) next-token logits and the slots the request now holds."""
        if packed.batch_size != 1:
            raise FastPathError("a prefill graph serves one request")
        length = self.padded(packed.length)
        padded = merge_packed([packed], length)
        if not self.use_graphs or self.failed is not None:
            with dynamic_shape_attention():
                return self.model.prefill(padded), length
        entry = self._graph(length, padded)
        if entry is None:  # the capture failed: eager from now on
            return self(packed)
        graph, inputs, logits = entry
        for name, buffer in vars(inputs).items():
            buffer.copy_(getattr(padded, name))
        graph.replay()
        return logits, length

    @torch.no_grad()
    def capture(self, length: int, like: PackedPrompt) -> bool:
        """Capture the graph of ``length``'s bucket ahead of use, shaped like ``like``
        (one request); False when graphs are off or the capture failed."""
        if not self.use_graphs or self.failed is not None:
            return False
        size = self.padded(length)
        return self._graph(size, merge_packed([like], size)) is not None

    def _graph(
        self, length: int, padded: PackedPrompt
    ) -> tuple[torch.cuda.CUDAGraph, PackedPrompt, Tensor] | None:
        cache = self.model.k_cache
        ptr = -1 if cache is None else cache.data_ptr()
        if ptr != self._cache_ptr:  # a new cache: the graphs wrote the old one
            if self._graphs:
                # and a new pool: once its graphs are gone, the allocator refuses to
                # capture into the old one while their outputs are still alive
                self._graphs.clear()
                self._pool = torch.cuda.graph_pool_handle()
            self._cache_ptr = ptr
        entry = self._graphs.get(length)
        if entry is not None:
            return entry
        try:
            entry = self._graphs[length] = self._capture(padded)
        except Exception as err:  # a driver or backend that refuses: eager prefills
            self.failed = f"{type(err).__name__}: {err}"
            _LOGGER.warning("prefill graphs off, capturing one failed: %s", self.failed)
            return None
        return entry

    def _capture(self, padded: PackedPrompt) -> tuple[torch.cuda.CUDAGraph, PackedPrompt, Tensor]:
        inputs = PackedPrompt(**{name: t.clone() for name, t in vars(padded).items()})
        device = inputs.kind.device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with dynamic_shape_attention():
            with torch.cuda.stream(stream):  # warm-up off the capture (kernel selection)
                self.model.prefill(inputs)
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with capturing(graph, device, stream, self._pool):
                logits = self.model.prefill(inputs)
        return graph, inputs, logits


def decode_stream(device: torch.device | str) -> torch.cuda.Stream:
    """A CUDA stream for SoVITS work (its graphs are captured on one): of higher priority
    than the GPT's, so its kernels go first where both run at once. PyTorch keeps a pool
    of streams per priority, so graphs captured on these never share a stream, and with it
    a cuBLAS workspace, with the GPT's graphs, which may replay at the same time."""
    return torch.cuda.Stream(device=device, priority=DECODE_STREAM_PRIORITY)


def _copy_in(buffer: Tensor, host: Tensor) -> None:
    """Copy a host tensor into a device buffer without the host waiting for the GPU
    (through pinned memory, asynchronously; a plain copy waits for all queued kernels)."""
    if buffer.device.type == "cuda" and host.device.type == "cpu":
        buffer.copy_(host.pin_memory(), non_blocking=True)
    else:
        buffer.copy_(host)


def _fill_decode_inputs(
    io: dict[str, Tensor],
    rows: Sequence[tuple[Tensor, Tensor, Tensor, Tensor | None, float]],
    frames_per_token: int,
) -> None:
    """Write ``rows`` into a graph bucket's input buffers: the integer inputs are padded on
    the host and copied once (not a small copy per row); spare rows decode one silent token."""
    slots, tokens = io["codes"].shape[1:]
    phones = io["text"].shape[1]
    codes = np.zeros((slots, tokens), dtype=np.int64)  # padded in numpy: 64 rows' torch
    text = np.zeros((slots, phones), dtype=np.int64)  # indexing took ~1 ms of the host
    code_len = np.ones(slots, dtype=np.int64)
    text_len = np.ones(slots, dtype=np.int64)
    scale = np.zeros((slots, 1, 1), dtype=np.float32)
    io["noise"].zero_()
    for b, (c, t, _, noise, s) in enumerate(rows):
        n_c, n_t = len(c), len(t)
        codes[b, :n_c], text[b, :n_t] = c.cpu().numpy(), t.cpu().numpy()
        code_len[b], text_len[b], scale[b] = n_c, n_t, s
        frames = n_c * frames_per_token
        if noise is None:
            io["noise"][b, :, :frames].normal_()
        else:
            io["noise"][b, :, :frames] = noise[0]
    for name, value in (("code_len", code_len), ("text_len", text_len), ("scale", scale)):
        _copy_in(io[name], torch.from_numpy(value))
    _copy_in(io["codes"][0], torch.from_numpy(codes))
    _copy_in(io["text"], torch.from_numpy(text))
    io["ge"].zero_()
    io["ge"][: len(rows)] = torch.cat([r[2] for r in rows]).to(io["ge"])


def _decode_body(
    model: SoVITS,
    codes: Tensor,
    text: Tensor,
    code_len: Tensor,
    text_len: Tensor,
    ge: Tensor,
    noise: Tensor,
    scale: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """What a ``SoVITSGraphs`` graph computes: ``SoVITS.decode`` of padded rows with their
    lengths, the prior draw replaced by ``noise`` (R, C, T_f) times ``scale`` (R, 1, 1);
    returns the prior mean and flow output (R, C, T_f) and the audio (R, 1, T_f * 640)."""
    m, z, mask = _latents_body(model, codes, text, code_len, text_len, ge, noise, scale)
    audio = model.vocode(z, ge, code_len * model.cfg.frames_per_token)
    return m, z, audio * mask.repeat_interleave(model.cfg.upsample_factor, dim=2)


def _latents_body(
    model: SoVITS,
    codes: Tensor,
    text: Tensor,
    code_len: Tensor,
    text_len: Tensor,
    ge: Tensor,
    noise: Tensor,
    scale: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``_decode_body`` up to the vocoder (the first graph of ``SoVITSGraphs.decode_windows``):
    the prior mean and the flow output zeroed past each row's frames (R, C, T_f), and the
    frame mask (R, 1, T_f)."""
    m, logs, mask = model.encode_text_semantic(codes, text, ge, 1.0, code_len, text_len)
    z = model.flow_reverse(m + noise * torch.exp(logs) * scale, mask, ge)
    return m, z * mask, mask


class SoVITSGraphs:
    """``SoVITS.decode`` replayed from CUDA graphs captured per (rows, token, phone) bucket.

    Inputs are padded to the smallest bucket that holds them and masked by length
    tensors (the vocoder through its ``lengths``), so a replay computes the
    exact-length decode of every row; the audio is cut to each row's ``T * upsample_factor``
    samples. The prior noise is an input buffer, not a draw inside the graph, so a caller
    can feed noise that stays the same across re-decodes of a growing prefix
    (``pipeline.NoiseTape``); without it, ``decode`` draws fresh noise from the default
    CUDA generator. Speed is always 1. ``decode_rows`` serves several sentences in one
    replay (the streams of ``pipeline`` that reach a decode together).

    ``decode_windows`` serves such rows when each needs only the audio from a latent frame
    on (a streamed decode sends only what it has not sent): one replay of the text encoder
    and flow of the whole prefixes (per rows, token, phone bucket), a gather of each row's
    window (from the vocoder's reach before its start), one replay of the vocoder over the
    windows (per rows, window bucket). Each window is widened over its row's earlier frames
    to the bucket's width, so where every row has that many frames the vocoder graph needs
    no masks (a second graph per bucket, with masks, serves rows that are shorter). These
    graphs capture the plain decode, compiled or not. A capture that fails turns them off
    (``windows_failed``, logged) and ``decode_windows`` raises ``FastPathError``: decode
    the whole prefixes instead.

    ``use_graphs`` False runs every bucket's decode eagerly on the same padded buffers
    (CPU tests of the padding, windows and slicing).
    """

    def __init__(
        self,
        model: SoVITS,
        token_buckets: Sequence[int] = (16, 25, 50, 100, 150, 200, 250, 300, 400, 500),
        phone_buckets: Sequence[int] = (32, 64, 128, 256, 512),
        noise_scale: float = 0.5,
        row_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
        max_cells: int = 4096,
        compile: bool = False,
        window_buckets: Sequence[int] = WINDOW_BUCKETS,
        use_graphs: bool = True,
        max_latent_cells: int = 16384,
    ) -> None:
        """``noise_scale`` is the default of ``decode``'s own argument; a batched graph
        holds at most ``max_cells`` padded tokens (rows x tokens), which bounds its memory.
        ``decode_windows``' vocoder graphs hold as many tokens' frames (rows x window), and
        its latents graphs, which need far less memory per token (no upsampling), at most
        ``max_latent_cells`` padded tokens.

        ``compile``: the decode the graphs capture is first compiled by TorchInductor, with
        dynamic shapes, so one compilation serves every bucket of one row, and one every
        bucket of several (on the H200 a 1 s decode 6.05 -> 4.57 ms, 10 s 15.53 -> 11.55 ms;
        the first capture of each kind compiles for 1.5 to 2.5 minutes, less with the
        compiler's disk cache warm). A failed compilation is logged (``compile_failed``) and
        the graphs capture the plain decode from then on."""
        weight = next(model.parameters())
        if use_graphs:
            _require_cuda(weight.device)
        self.model, self.device, self.dtype = model, weight.device, weight.dtype
        self.use_graphs = use_graphs
        self.token_buckets, self.phone_buckets = sorted(token_buckets), sorted(phone_buckets)
        self.row_buckets, self.max_cells = sorted(row_buckets), max_cells
        self.window_buckets, self.max_latent_cells = sorted(window_buckets), max_latent_cells
        self.noise_scale = noise_scale
        self.compile_failed: str | None = None
        self.windows_failed: str | None = None  # why decode_windows is off
        self._compiled: Callable[..., tuple[Tensor, Tensor, Tensor]] | None = None
        self._compiled_kinds: set[bool] = set()  # rows > 1 of the compilations done
        if compile and use_graphs:
            self._compiled = torch.compile(_decode_body, dynamic=True)
        self._pool = torch.cuda.graph_pool_handle() if use_graphs else None
        # bucket -> (replay, its buffers); the latents and vocoder graphs of decode_windows
        self._graphs: dict[tuple[int, int, int], tuple[Callable[[], None], dict[str, Tensor]]] = {}
        self._latents: dict[tuple[int, int, int], tuple[Callable[[], None], dict[str, Tensor]]] = {}
        self._vocoders: dict[
            tuple[int, int, bool], tuple[Callable[[], None], dict[str, Tensor]]
        ] = {}

    @staticmethod
    def _pick(buckets: Sequence[int], n: int, what: str) -> int:
        for b in buckets:
            if n <= b:
                return b
        raise FastPathError(f"{n} {what} exceed the largest bucket {buckets[-1]}")

    def fits(self, tokens: int, phones: int, rows: int = 1) -> bool:
        """Whether a graph serves ``rows`` sentences of at most ``tokens`` codes and
        ``phones`` phones (else: eager)."""
        if not (
            0 < tokens <= self.token_buckets[-1]
            and 0 < phones <= self.phone_buckets[-1]
            and 0 < rows <= self.row_buckets[-1]
        ):
            return False
        if rows == 1:
            return True
        return self._key(tokens, phones, rows)[0] * self._key(tokens, phones)[1] <= self.max_cells

    def window_frames(self, tokens: int, start: int) -> int:
        """Latent frames ``decode_windows`` vocodes for a prefix of ``tokens`` codes whose
        audio is wanted from frame ``start`` on."""
        return self.model.cfg.window_frames(tokens, start)

    def fits_windows(self, tokens: int, phones: int, rows: int, window: int) -> bool:
        """Whether ``decode_windows`` serves ``rows`` prefixes of at most ``tokens`` codes
        and ``phones`` phones with windows of at most ``window`` frames (and is on)."""
        if self.windows_failed is not None or not (
            0 < tokens <= self.token_buckets[-1]
            and 0 < phones <= self.phone_buckets[-1]
            and 0 < rows <= self.row_buckets[-1]
            and 0 < window <= self.window_buckets[-1]
        ):
            return False
        slots, padded, _ = self._key(tokens, phones, rows)
        frames = self.max_cells * self.model.cfg.frames_per_token
        return rows == 1 or (
            slots * padded <= self.max_latent_cells and slots * self.window_width(window) <= frames
        )

    def windowed(self, tokens: int, phones: int, rows: int, window: int, sent: bool) -> bool:
        """Whether ``rows`` prefixes of at most ``tokens`` codes and ``phones`` phones, with
        windows of at most ``window`` frames, go through ``decode_windows`` rather than a
        whole decode's graph: several rows, or one with audio ``sent`` (one sentence alone
        from its start replays the whole decode's graph, which warm-up captures); and it
        serves them."""
        return (rows > 1 or sent) and self.fits_windows(tokens, phones, rows, window)

    def price(
        self, tokens: int, phones: int, rows: int, window: int, sent: bool, shortest: int
    ) -> int | None:
        """What one call serving ``rows`` prefixes costs, in latent frames: those its vocoder
        runs over (its row and window or token buckets), plus ``CAPTURE_FRAMES`` when its
        graphs are yet to be captured; None when no graph serves them. ``window`` is the
        widest window, ``shortest`` the shortest prefix's frames (shorter than the window
        bucket: the masked vocoder graph)."""
        if self.windowed(tokens, phones, rows, window, sent):
            key, width = self._key(tokens, phones, rows), self.window_width(window)
            frames = key[0] * width
            ready = key in self._latents and (key[0], width, shortest < width) in self._vocoders
        elif self.fits(tokens, phones, rows):
            key = self._key(tokens, phones, rows)
            frames, ready = key[0] * key[1] * self.model.cfg.frames_per_token, key in self._graphs
        else:
            return None
        return frames + (0 if ready else CAPTURE_FRAMES)

    def price_rows(self, rows: int) -> int:
        """A row count that ``price`` answers for as for ``rows``: its row bucket (one row,
        or more than the largest bucket holds, as it is), so callers can share answers."""
        if rows == 1 or rows > self.row_buckets[-1]:
            return rows
        return self._pick(self.row_buckets, rows, "rows")

    def _key(self, tokens: int, phones: int, rows: int = 1) -> tuple[int, int, int]:
        return (
            self._pick(self.row_buckets, rows, "rows"),
            self._pick(self.token_buckets, tokens, "tokens"),
            self._pick(self.phone_buckets, phones, "phones"),
        )

    def _decode_inputs(self, rows: int, tokens: int, phones: int) -> dict[str, Tensor]:
        """The input buffers of a (rows, tokens, phones) bucket."""
        dev, cfg = self.device, self.model.cfg
        frames = tokens * cfg.frames_per_token
        return {
            "codes": torch.zeros(1, rows, tokens, dtype=torch.long, device=dev),
            "text": torch.zeros(rows, phones, dtype=torch.long, device=dev),
            "code_len": torch.full((rows,), tokens, dtype=torch.long, device=dev),
            "text_len": torch.full((rows,), phones, dtype=torch.long, device=dev),
            "ge": torch.zeros(rows, cfg.gin_channels, 1, dtype=self.dtype, device=dev),
            "noise": torch.zeros(rows, cfg.inter_channels, frames, dtype=self.dtype, device=dev),
            "scale": torch.zeros(rows, 1, 1, dtype=self.dtype, device=dev),
        }

    def _capture(
        self, rows: int, tokens: int, phones: int
    ) -> tuple[Callable[[], None], dict[str, Tensor]]:
        dev = self.device
        io = self._decode_inputs(rows, tokens, phones)

        def run() -> tuple[Tensor, Tensor, Tensor]:
            body = self._compiled or _decode_body
            return body(self.model, io["codes"], io["text"], io["code_len"], io["text_len"],
                        io["ge"], io["noise"], io["scale"])  # fmt: skip

        if not self.use_graphs:
            return lambda: io.update(zip(("m", "z", "audio"), run(), strict=True)), io
        stream = decode_stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.no_grad():
            with torch.cuda.stream(stream):  # warm-up off the capture: kernels, compilation
                self._warm_up(run, rows)
            torch.cuda.current_stream(dev).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with capturing(graph, dev, stream, self._pool):
                io["m"], io["z"], io["audio"] = run()  # (R, C, T_f) x2, (R, 1, T_f * 640)
        return graph.replay, io

    def _captured(
        self, run: Callable[[], dict[str, Tensor]], io: dict[str, Tensor]
    ) -> Callable[[], None]:
        """The replay of ``run`` (plain, warmed up once off the capture), which writes its
        outputs into ``io``; ``run`` itself without graphs."""
        if not self.use_graphs:
            return lambda: io.update(run())
        stream = decode_stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad():
            with torch.cuda.stream(stream):
                run()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with capturing(graph, self.device, stream, self._pool):
                io.update(run())
        return graph.replay

    def _latents_graph(
        self, rows: int, tokens: int, phones: int
    ) -> tuple[Callable[[], None], dict[str, Tensor]]:
        key = (rows, tokens, phones)
        if key not in self._latents:
            io = self._decode_inputs(rows, tokens, phones)

            def run() -> dict[str, Tensor]:
                m, z, _ = _latents_body(self.model, io["codes"], io["text"], io["code_len"],
                                        io["text_len"], io["ge"], io["noise"], io["scale"])  # fmt: skip
                return {"m": m, "z": z}

            self._latents[key] = (self._captured(run, io), io)
        return self._latents[key]

    def _vocoder_graph(
        self, rows: int, width: int, masked: bool
    ) -> tuple[Callable[[], None], dict[str, Tensor]]:
        key = (rows, width, masked)
        if key not in self._vocoders:
            dev, cfg = self.device, self.model.cfg
            io = {
                "z": torch.zeros(rows, cfg.inter_channels, width, dtype=self.dtype, device=dev),
                "ge": torch.zeros(rows, cfg.gin_channels, 1, dtype=self.dtype, device=dev),
                "lengths": torch.full((rows,), width, dtype=torch.long, device=dev),
            }

            def run() -> dict[str, Tensor]:
                lengths = io["lengths"] if masked else None
                return {"audio": self.model.vocode(io["z"], io["ge"], lengths)}

            self._vocoders[key] = (self._captured(run, io), io)
        return self._vocoders[key]

    def _warm_up(self, run: Callable[[], object], rows: int) -> None:
        """Run a bucket's decode once before its capture; with ``compile``, that is where
        the compiling happens (once for one row, once for several), and where a failed
        compilation falls back to the plain decode."""
        if self._compiled is None:
            run()
            return
        first = (rows > 1) not in self._compiled_kinds
        if first:
            self._compiled_kinds.add(rows > 1)
            _LOGGER.info("Compiling the SoVITS decode for %s (minutes on a first start)",
                         "several rows" if rows > 1 else "one row")  # fmt: skip
        started = time.perf_counter()
        try:
            run()
        except Exception as err:
            self._compiled, self.compile_failed = None, f"{type(err).__name__}: {err}"
            _LOGGER.warning("SoVITS decode not compiled: %s", self.compile_failed)
            run()
            return
        if first:
            _LOGGER.info("SoVITS decode compiled in %.0f s", time.perf_counter() - started)

    def capture(self, tokens: int, phones: int, rows: int = 1) -> None:
        """Capture the graph serving ``rows`` x ``tokens`` codes and ``phones`` phones."""
        key = self._key(tokens, phones, rows)
        if key not in self._graphs:
            self._graphs[key] = self._capture(*key)

    def window_width(self, frames: int) -> int:
        """The window bucket of a vocoder window of ``frames`` latent frames."""
        return self._pick(self.window_buckets, frames, "window frames")

    def capture_windows(
        self, tokens: int, phones: int, rows: int, window: int, masked: bool = True
    ) -> bool:
        """Capture the two graphs ``decode_windows`` replays for ``rows`` prefixes of at
        most ``tokens`` codes and ``phones`` phones and windows of ``window`` frames, the
        vocoder's ``masked`` (some row is shorter than the window bucket) or not; False
        when they are off (a capture failed)."""
        if self.windows_failed is not None:
            return False
        key = self._key(tokens, phones, rows)
        try:
            self._latents_graph(*key)
            self._vocoder_graph(key[0], self.window_width(window), masked)
        except FastPathError:
            raise
        except Exception as err:  # a driver or backend that refuses: whole decodes
            self.windows_failed = f"{type(err).__name__}: {err}"
            _LOGGER.warning("windowed SoVITS graphs off, a capture failed: %s", self.windows_failed)
            return False
        return True

    @property
    def captured_windows(self) -> list[tuple[int, int, bool]]:
        """The (rows, window, masked) vocoder graphs captured for ``decode_windows``."""
        return sorted(self._vocoders)

    @property
    def captured(self) -> list[tuple[int, int]]:
        """The (token, phone) buckets captured so far for one sentence."""
        return sorted((t, p) for r, t, p in self._graphs if r == 1)

    @property
    def captured_batches(self) -> list[tuple[int, int, int]]:
        """The (rows, token, phone) buckets captured for several sentences at once."""
        return sorted(k for k in self._graphs if k[0] > 1)

    def decode(
        self,
        codes: Tensor,
        text: Tensor,
        ge: Tensor,
        noise: Tensor | None = None,
        noise_scale: float | None = None,
    ) -> Tensor:
        """codes (T,) int, text (L,) int, ge (1, gin, 1) -> audio (T * 1280,) float.

        ``noise`` (1, inter, 2T) is N(0, 1) prior noise (drawn here when None), scaled by
        ``noise_scale`` (default: the constructor's).
        """
        return self.decode_latents(codes, text, ge, noise, noise_scale)[2]

    @torch.no_grad()
    def decode_latents(
        self,
        codes: Tensor,
        text: Tensor,
        ge: Tensor,
        noise: Tensor | None = None,
        noise_scale: float | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """As ``decode``, also returning the prior mean and flow output (1, inter, 2T)."""
        if codes.ndim != 1 or text.ndim != 1 or codes.numel() == 0 or text.numel() == 0:
            raise VitsInputError("codes and text must be non-empty 1-D tensors")
        frames = codes.shape[0] * self.model.cfg.frames_per_token
        channels = self.model.cfg.inter_channels
        if noise is not None and noise.shape != (1, channels, frames):
            raise VitsInputError(
                f"noise must be (1, {channels}, {frames}); got {tuple(noise.shape)}"
            )
        scale = self.noise_scale if noise_scale is None else noise_scale
        io = self._replay([(codes, text, ge, noise, scale)])
        samples = frames * self.model.cfg.upsample_factor  # 1280 per token at 32 kHz
        m, z = io["m"][:, :, :frames].clone(), io["z"][:, :, :frames].clone()
        return m, z, io["audio"][0, 0, :samples].clone()

    @torch.no_grad()
    def decode_rows(
        self, rows: Sequence[tuple[Tensor, Tensor, Tensor, Tensor | None, float]]
    ) -> list[Tensor]:
        """Several sentences in one replay: each row is codes (T,), text (L,), ge (1, gin, 1),
        prior noise (1, inter, 2T) or None (drawn here) and its noise scale -> each row's
        audio (T * 1280,), the same as ``decode`` of that row alone."""
        if not rows or any(r[0].ndim != 1 or r[1].ndim != 1 for r in rows):
            raise VitsInputError("decode_rows needs rows of 1-D codes and text")
        io = self._replay(rows)
        per_token = self.model.cfg.frames_per_token * self.model.cfg.upsample_factor
        return [io["audio"][b, 0, : len(r[0]) * per_token].clone() for b, r in enumerate(rows)]

    @torch.no_grad()
    def decode_windows(
        self,
        rows: Sequence[tuple[Tensor, Tensor, Tensor, Tensor | None, float]],
        starts: Sequence[int],
    ) -> list[Tensor]:
        """``decode_rows``, each row's audio only from latent frame ``starts[b]`` on
        ((frames - start) * 640 samples): the same samples, the vocoder run over windows
        from ``VitsConfig.vocoder_reach_frames`` before each start. Raises ``FastPathError``
        when the rows exceed the buckets or the windowed graphs are off."""
        if not rows or any(r[0].ndim != 1 or r[1].ndim != 1 for r in rows):
            raise VitsInputError("decode_windows needs rows of 1-D codes and text")
        if len(starts) != len(rows):
            raise VitsInputError(f"{len(starts)} starts for {len(rows)} rows")
        if self.windows_failed is not None:
            raise FastPathError(f"windowed SoVITS graphs are off: {self.windows_failed}")
        n_tok, n_ph = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        widest = max(self.window_frames(len(r[0]), s) for r, s in zip(rows, starts, strict=True))
        if not self.fits_windows(n_tok, n_ph, len(rows), widest):
            raise FastPathError(f"no graph bucket holds {len(rows)} rows x {n_tok} tokens")
        cfg = self.model.cfg
        frames = [len(r[0]) * cfg.frames_per_token for r in rows]
        key = self._key(n_tok, n_ph, len(rows))
        width = self.window_width(widest)
        windows = VocoderWindows.of(starts, frames, cfg.vocoder_reach_frames, key[0], width, True)
        if not self.capture_windows(n_tok, n_ph, len(rows), widest, windows.ragged):
            raise FastPathError(f"windowed SoVITS graphs are off: {self.windows_failed}")
        replay_latents, latents = self._latents[key]
        replay_vocoder, vocoder = self._vocoders[(key[0], width, windows.ragged)]
        _fill_decode_inputs(latents, rows, cfg.frames_per_token)
        replay_latents()
        index = host_to_device(windows.index, self.device).expand(-1, cfg.inter_channels, -1)
        torch.gather(latents["z"], 2, index, out=vocoder["z"])
        _copy_in(vocoder["lengths"], windows.lengths)
        vocoder["ge"].copy_(latents["ge"])
        replay_vocoder()
        return [a.clone() for a in windows.cut(vocoder["audio"], cfg.upsample_factor)]

    def _replay(
        self, rows: Sequence[tuple[Tensor, Tensor, Tensor, Tensor | None, float]]
    ) -> dict[str, Tensor]:
        """Fill the inputs of the bucket holding ``rows`` and replay its graph. Spare rows
        of the bucket decode one silent token (their output is not read)."""
        n_tok = max(len(r[0]) for r in rows)
        n_ph = max(len(r[1]) for r in rows)
        if len(rows) > 1 and not self.fits(n_tok, n_ph, len(rows)):
            raise FastPathError(f"no graph bucket holds {len(rows)} rows x {n_tok} tokens")
        key = self._key(n_tok, n_ph, len(rows))
        self.capture(n_tok, n_ph, len(rows))
        replay, io = self._graphs[key]
        _fill_decode_inputs(io, rows, self.model.cfg.frames_per_token)
        replay()
        return io
