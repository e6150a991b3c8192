"""Continuous batching of the GPT decode step: sentences of several requests share each step.

``ContinuousBatcher`` owns the model's static KV cache with ``max_batch`` rows. A sentence
``open``s a row and gets a ``RowStream``: an iterator of its new tokens. Opening only takes
note on the host; before the next step every row opened since is prefilled in one batch
(while the other rows are mid-sentence) and its state written with one indexed write per
tensor, so a burst of requests costs one prefill, not one each. Whenever a stream
has nothing buffered, ``advance`` runs ``steps_per_sync`` decode steps for *every* row at
once (one CUDA graph replay, one host sync) and hands each row its new tokens; finished
rows are parked until their stream is closed, then the row is free for the next sentence.

The step is ``fast.T2SGraphRunner``'s with per-row counters: each row has its own step
(EOS bar, token cap), cache slot and sampling parameters, so rows admitted at different
times decode side by side. Rows are handed out lowest first and a replay steps only the
rows up to the highest live one, rounded up to a row bucket (1, 4, 16, ... rows, each its
own graphs): one request in a batch built for 64 pays for one row, not 64. Random draws
come from the device's default generator, which the rows share: a seeded sentence is
reproducible when it decodes alone.

The engine drives several sentences' generators round-robin on its one worker thread
(``Engine.capacity`` = ``Pipeline.max_concurrent``); whichever generator first needs a
token advances all rows, and the others find theirs buffered.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .fast import TOP_K_CAP, FastPathError, PrefillGraphs, _require_cuda, capturing
from .generate import (
    EOS_BLOCKED_STEPS,
    RowParams,
    SamplingError,
    SamplingParams,
    dynamic_shape_attention,
    next_token,
)
from .models.t2s import (
    T2SInput,
    T2SInputError,
    Text2Semantic,
    check_input,
    host_to_device,
    pack_inputs,
)

# Prompt lengths a one-row batch's prefill graphs are bucketed by (slots).
PREFILL_BUCKET = 64
# A replay steps the rows up to the highest live one rounded up to a power of this (and
# at most the whole batch): 1, 4, 16, 64 rows.
ROW_BUCKET_BASE = 4


def row_buckets(max_batch: int, base: int | None = None) -> tuple[int, ...]:
    """The row counts a batch of ``max_batch`` rows replays: powers of ``base`` (default
    ``ROW_BUCKET_BASE``) below it, then ``max_batch`` itself (``base`` <= 1: the whole
    batch only)."""
    base = ROW_BUCKET_BASE if base is None else base
    buckets, rows = [], 1
    while base > 1 and rows < max_batch:
        buckets.append(rows)
        rows *= base
    return (*buckets, max_batch)


def bucket_for(buckets: tuple[int, ...], rows: int) -> int | None:
    """The smallest of the ascending ``buckets`` holding ``rows`` rows (None: none does)."""
    return next((b for b in buckets if b >= rows), None)


class BatchFullError(FastPathError):
    """Every row of the batch is taken (the engine admits at most ``max_batch`` sentences)."""


@dataclass
class _BatchState:
    """Per-row tensors the captured step reads and writes (static addresses)."""

    logits: Tensor  # (B, V) float32
    seen: Tensor  # (B, V) bool: repetition-penalty set
    active: Tensor  # (B,) bool
    step: Tensor  # (B,) int64: the row's own step counter
    limit: Tensor  # (B,) int64: its token cap
    input_pos: Tensor  # (B,) int64: its next cache slot
    last_slot: Tensor  # (B,) int64: the highest slot it may write
    top_k: Tensor  # (B,) int64
    top_p: Tensor  # (B, 1)
    temperature: Tensor  # (B, 1)
    penalty: Tensor  # (B, 1)
    report: Tensor  # (B, K + 1) int64: the replay's tokens (-1: none), then active

    @classmethod
    def allocate(cls, batch: int, vocab: int, steps: int, device: torch.device) -> _BatchState:
        def z(*shape: int, dtype: torch.dtype = torch.long) -> Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        return cls(
            logits=z(batch, vocab, dtype=torch.float32),
            seen=z(batch, vocab, dtype=torch.bool),
            active=z(batch, dtype=torch.bool),
            step=z(batch),
            limit=z(batch),
            input_pos=z(batch),
            last_slot=z(batch),
            top_k=torch.ones(batch, dtype=torch.long, device=device),
            top_p=torch.ones(batch, 1, device=device),
            temperature=torch.ones(batch, 1, device=device),
            penalty=torch.ones(batch, 1, device=device),
            report=z(batch, steps + 1),
        )

    def rows(self, count: int) -> _BatchState:
        """The first ``count`` rows' state (views: writes reach the whole batch's)."""
        return _BatchState(*(t[:count] for t in vars(self).values()))


@dataclass(frozen=True)
class _Admission:
    """A row opened and not yet prefilled: its request and what its state will hold."""

    item: T2SInput
    params: SamplingParams
    max_new: int
    seed: int
    length: int  # prompt slots: phones + prompt tokens


@dataclass
class _Replay:
    """A queued replay: the rows it decodes for (row -> stream) and its report's copy."""

    streams: dict[int, RowStream]
    report: Tensor  # (B, K + 1) on the host, valid once ``done`` has completed
    done: torch.cuda.Event | None


class RowStream:
    """One sentence's new tokens (1-D int64 CPU tensors) as the batch produces them."""

    def __init__(self, batcher: ContinuousBatcher, row: int, top_p: bool) -> None:
        self.batcher, self.row, self.top_p = batcher, row, top_p
        self.buffer: deque[Tensor] = deque()
        self.done = False
        self.closed = False
        self.announced = False

    def __iter__(self) -> RowStream:
        return self

    def __next__(self) -> Tensor:
        if self.row in self.batcher._waiting and not self.announced:
            self.announced = True  # "admitted, not prefilled": let other requests join it
            return torch.zeros(0, dtype=torch.long)
        while not self.buffer:
            if self.done or self.closed:
                self.close()
                raise StopIteration
            self.batcher.advance()
        return self.buffer.popleft()

    def close(self) -> None:
        """Give the row back (idempotent); unread tokens are dropped."""
        if not self.closed:
            self.closed = True
            self.batcher._release(self.row)


class ContinuousBatcher:
    """``max_batch`` GPT rows decoded together; see the module docstring."""

    def __init__(
        self,
        model: Text2Semantic,
        max_batch: int,
        max_seq: int,
        *,
        max_new_tokens: int,
        steps_per_sync: int = 4,
        kv_bucket: int = 256,
        forward: Callable[..., Tensor] | None = None,
        sampler: Callable[..., tuple[Tensor, Tensor]] | None = None,
        use_graphs: bool = True,
        defer_prefill: bool = False,
        run_ahead: bool | None = None,
        prefill_bucket: int | None = None,
        buckets: tuple[int, ...] | None = None,
        replay_priority: int | None = None,
        prefill_on_replay_stream: bool = True,
    ) -> None:
        """``forward`` replaces the model's step (``kernels.FusedDecodeStep``); ``sampler``
        replaces ``generate.next_token`` and the EOS bar (``kernels.FusedSampler``: its
        draws are keyed by each row's seed, see ``open``). ``defer_prefill``: ``open``
        only reserves the row, and the next ``advance`` prefills every row opened since
        in one batched prefill (left-padded to the longest); a stream's first item is
        then an empty tensor, so its reader can let other requests open rows first.

        ``run_ahead`` (default: with graphs) queues the next replay before reading the
        current one's tokens, so the GPU does not idle while the host hands tokens out
        and admits rows; a row that stops meanwhile runs one replay more, emitting
        nothing (its tokens are decided on the device).

        ``prefill_bucket``: a one-row batch prefills from CUDA graphs per prompt length
        rounded up to this many slots (``fast.PrefillGraphs``; the default with graphs:
        64; 0: eager prefills). Without graphs a bucket pads the eager prefill alike.

        ``buckets``: the row counts a replay may step (ascending, the last ``max_batch``);
        default ``forward.row_buckets`` if it has them (a step per bucket, see
        ``kernels.RowBucketSteps``), else ``row_buckets(max_batch)``.

        ``replay_priority`` (graphs only): the replays run on a CUDA stream of this
        priority (lower is higher), after the caller's stream's queued work and before its
        next (the caller's stream waits for each replay). With SoVITS decodes on a stream of
        their own, a priority above theirs lets the step's small kernels take the
        multiprocessors as the vocoder's blocks finish, instead of waiting for its grids.
        ``prefill_on_replay_stream``: the prefills run there too (a request's next sentence
        is prefilled while the sentence before is vocoded; H200, 64 rows: 32-36 ms of the
        worker's time there, 69-83 ms below the vocoder)."""
        weight = model.ar_predict_layer.weight
        if use_graphs:
            _require_cuda(weight.device)
        if min(max_batch, max_seq, max_new_tokens, steps_per_sync, kv_bucket) < 1:
            raise FastPathError("batch, slots, token cap, steps and bucket must be >= 1")
        self.model, self.cfg = model, model.config
        self._forward = forward or model
        self._sampler = sampler
        self.max_batch, self.max_seq, self.max_new_tokens = max_batch, max_seq, max_new_tokens
        self.steps, self.kv_bucket, self.use_graphs = steps_per_sync, kv_bucket, use_graphs
        self.device = weight.device
        model.setup_caches(max_batch, max_seq, dtype=weight.dtype, device=weight.device)
        self._cache = model.k_cache
        self.state = _BatchState.allocate(max_batch, self.cfg.vocab_size, self.steps, self.device)
        out = getattr(self._forward, "logits", None)  # a fused step's static logits buffer
        if (
            isinstance(out, Tensor)
            and out.dtype == torch.float32
            and out.device == self.device
            and out.shape[0] >= max_batch
            and out.shape[1:] == self.state.logits.shape[1:]
        ):
            self.state.logits = out[:max_batch]  # the step writes them where sampling reads
        self.run_ahead = use_graphs if run_ahead is None else run_ahead
        if prefill_bucket is None:
            prefill_bucket = PREFILL_BUCKET if use_graphs and max_batch == 1 else 0
        self._prefills = (
            PrefillGraphs(model, prefill_bucket, use_graphs=use_graphs) if prefill_bucket else None
        )
        self._pending: _Replay | None = None
        pinned = self.device.type == "cuda"  # so the report's copy does not block
        shape = self.state.report.shape
        self._reports = [torch.zeros(shape, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self._launched = 0
        self._eos_col = torch.zeros(1, self.cfg.vocab_size, dtype=torch.bool, device=self.device)
        self._eos_col[0, self.cfg.eos] = True
        self._free = list(range(max_batch))  # a heap: the lowest free row first
        if buckets is None:
            buckets = getattr(self._forward, "row_buckets", None) or row_buckets(max_batch)
        if list(buckets) != sorted(set(buckets)) or buckets[-1] != max_batch or buckets[0] < 1:
            raise FastPathError(f"row buckets must ascend to {max_batch}; got {buckets}")
        self.buckets = tuple(buckets)
        self.defer_prefill = defer_prefill
        self._waiting: dict[int, _Admission] = {}  # opened rows the next step prefills
        self._streams: dict[int, RowStream] = {}
        self._pos = [0] * max_batch  # host copy of each live row's next slot
        self._graphs: dict[tuple[int, bool, int], torch.cuda.CUDAGraph] = {}
        self._replay_stream: torch.cuda.Stream | None = None
        self.prefill_on_replay_stream = prefill_on_replay_stream
        if use_graphs:
            self._pool = torch.cuda.graph_pool_handle()
            self._stream = torch.cuda.Stream(device=self.device)
            if replay_priority is not None:
                self._replay_stream = torch.cuda.Stream(self.device, priority=replay_priority)

    @property
    def live_rows(self) -> int:
        return len(self._streams)

    def owns_cache(self) -> bool:
        """False once something else replaced the model's KV cache (then build a new one)."""
        return self.model.k_cache is self._cache

    # -- admission ------------------------------------------------------------------

    @torch.no_grad()
    def open(
        self, item: T2SInput, params: SamplingParams, max_new: int, seed: int | None = None
    ) -> RowStream:
        """Admit one request into a free row; its tokens come from the stream.

        Only the host takes note here: the row's prompt and state reach the device with the
        other rows opened before the next step, in one batched prefill (at once unless
        ``defer_prefill``). ``seed`` keys the row's draws when the sampler is the fused one
        (a fixed seed then gives the same tokens whatever rows decode beside it); None: a
        fresh seed.
        """
        check_input(0, item, self.cfg)
        if not self._free:
            raise BatchFullError(f"all {self.max_batch} rows are decoding")
        prompt_tokens = item.prompt_len
        length = int(item.phone_ids.shape[0]) + prompt_tokens
        if not 1 <= max_new <= self.max_new_tokens or length + max_new > self.max_seq:
            raise FastPathError(
                f"a row holds {self.max_seq} slots and {self.max_new_tokens} new tokens; "
                f"need {length} + {max_new}"
            )
        if prompt_tokens + max_new - 1 > self.cfg.max_positions:
            raise T2SInputError(f"{prompt_tokens} prompt + {max_new} tokens exceed the positions")
        if params.top_k > TOP_K_CAP:
            raise SamplingError(f"the batched path serves top_k <= {TOP_K_CAP}")
        row = heapq.heappop(self._free)
        seed = seed if seed is not None else secrets.randbits(62)
        stream = RowStream(self, row, params.top_p < 1.0)
        self._streams[row] = stream
        self._waiting[row] = _Admission(item, params, max_new, seed, length)
        if not self.defer_prefill:
            self._prefill_waiting()
        return stream

    def _prefill_waiting(self) -> None:
        """Prefill the rows opened since the last step: together, in groups whose longest
        prompt still leaves every member its slots for new tokens."""
        if not self._waiting:
            return
        waiting = sorted(self._waiting.items(), key=lambda entry: entry[1].length)
        self._waiting = {}
        group: list[tuple[int, _Admission]] = []
        for entry in waiting:
            longest = entry[1].length
            if group and any(longest + a.max_new > self.max_seq for _, a in group):
                self._prefill_group(group)
                group = []
            group.append(entry)
        self._prefill_group(group)

    def _prefill_group(self, group: list[tuple[int, _Admission]]) -> None:
        above = self.prefill_on_replay_stream
        with self._on_replay_stream() if above else contextlib.nullcontext():
            self._prefill_rows(group)

    def _prefill_rows(self, group: list[tuple[int, _Admission]]) -> None:
        rows = [row for row, _ in group]
        packed = pack_inputs([a.item for _, a in group], self.cfg, self.device, checked=True)
        length = packed.length
        graphs, longest = self._prefills, max(a.max_new for _, a in group)
        if graphs is not None and rows == [0] and graphs.padded(length) + longest <= self.max_seq:
            logits, length = graphs(packed)  # left-padded to its bucket: more slots
        else:
            with dynamic_shape_attention():
                if len(rows) == 1:
                    logits = self.model.prefill(packed, row=rows[0])
                else:
                    logits = self.model.prefill(packed, rows=rows)
        self._admit(group, logits, length)

    def _admit(self, group: list[tuple[int, _Admission]], logits: Tensor, length: int) -> None:
        """The prefilled rows' state, written for the whole group at once: sampling
        parameters, the prompt's tokens as seen, counters, slots and first logits. The host
        values go over asynchronously: the host does not wait for the prefill here."""
        s, dev = self.state, self.device
        rows = [row for row, _ in group]
        index = host_to_device(torch.tensor(rows, dtype=torch.long), dev)
        params = RowParams.of([a.params for _, a in group], self.cfg.vocab_size, dev)
        s.top_k[index] = params.top_k
        s.top_p[index] = params.top_p
        s.temperature[index] = params.temperature
        s.penalty[index] = params.penalty
        s.seen[index] = False
        prompts = [(row, t) for row, a in group if (t := a.item.prompt_tokens) is not None]
        if any(len(t) for _, t in prompts):  # (row, token) pairs built on the host: no masking
            which = torch.cat([torch.full((len(t),), row) for row, t in prompts])
            tokens = torch.cat([t.long().cpu() for _, t in prompts])
            s.seen[host_to_device(which, dev), host_to_device(tokens, dev)] = True
        s.active[index] = True
        s.step[index] = 0
        s.limit[index] = host_to_device(torch.tensor([a.max_new for _, a in group]), dev)
        s.logits[index] = logits.float()
        s.input_pos[index] = length
        s.last_slot[index] = host_to_device(
            torch.tensor([length + a.max_new - 1 for _, a in group]), dev
        )
        seeds = getattr(self._sampler, "seed", None)
        if seeds is not None:
            seeds[index] = host_to_device(torch.tensor([a.seed for _, a in group]), dev)
        for row in rows:
            self._pos[row] = length

    def _release(self, row: int) -> None:
        self._streams.pop(row, None)
        self._waiting.pop(row, None)
        self._park(row)
        heapq.heappush(self._free, row)

    def _park(self, row: int) -> None:
        """A finished or free row keeps stepping (fixed shapes) on slot 0 of its own cache."""
        s = self.state
        s.active[row] = False
        s.input_pos[row] = 0
        s.last_slot[row] = 0
        self._pos[row] = 0

    # -- decoding ---------------------------------------------------------------------

    @torch.no_grad()
    def advance(self) -> None:
        """``steps_per_sync`` steps for every row; each live row's new tokens to its stream.

        With ``run_ahead`` the replay after this one is queued before this one's tokens
        are read (one host sync per replay either way)."""
        self._prefill_waiting()
        if self._pending is None:
            self._pending = self._launch()
            if self._pending is None:
                return
        current, self._pending = self._pending, self._launch() if self.run_ahead else None
        self._collect(current)

    @torch.no_grad()
    def pump(self) -> bool:
        """``advance`` without waiting for the GPU, for a caller that has other work in
        flight on it (a SoVITS decode on its own stream): the queued replay's tokens go to
        their streams if it has finished, and the next replay is queued. True while a
        replay is queued; False: no row is live. The next ``advance`` collects it."""
        pending = self._pending
        if pending is not None:
            if pending.done is not None and not pending.done.query():
                return True
            self._pending = None
            self._collect(pending)
        self._prefill_waiting()
        self._pending = self._launch()
        return self._pending is not None

    def _launch(self) -> _Replay | None:
        """Queue one replay for the rows live now (None: there are none)."""
        streams = {row: stream for row, stream in self._streams.items() if not stream.done}
        if not streams:
            return None
        highest = max(self._pos[row] for row in streams) + self.steps - 1
        kv_len = min(self.max_seq, (highest // self.kv_bucket + 1) * self.kv_bucket)
        any_top_p = any(stream.top_p for stream in streams.values())
        rows = bucket_for(self.buckets, max(streams) + 1)
        assert rows is not None  # the last bucket is the whole batch
        report = self._reports[self._launched % 2]
        self._launched += 1
        with self._on_replay_stream():
            self._replay(kv_len, any_top_p, rows)
            report.copy_(self.state.report, non_blocking=True)
            done = None
            if self.device.type == "cuda":
                done = torch.cuda.Event()
                done.record()
        for row in streams:
            self._pos[row] += self.steps
        return _Replay(streams, report, done)

    @contextlib.contextmanager
    def _on_replay_stream(self) -> Iterator[None]:
        """The block's GPU work on the replay stream (``replay_priority``), after the
        caller's stream's queued work and before its next; without one, on the caller's."""
        side = self._replay_stream
        if side is None:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        side.wait_stream(caller)
        try:
            with torch.cuda.stream(side):
                yield
        finally:
            caller.wait_stream(side)

    def _collect(self, replay: _Replay) -> None:
        """Hand a finished replay's tokens to the streams that still own their rows."""
        if replay.done is not None:
            replay.done.synchronize()  # the one host sync per replay
        report = replay.report.numpy()  # read in numpy: 64 rows' torch indexing took ~1 ms
        for row, stream in replay.streams.items():
            if self._streams.get(row) is not stream:
                continue  # closed meanwhile (perhaps reopened for another sentence)
            tokens = report[row, : self.steps]
            emitted = tokens[tokens >= 0]  # a copy; a prefix: a row that stops stays stopped
            if len(emitted):
                stream.buffer.append(torch.from_numpy(emitted))
            if not report[row, self.steps]:
                stream.done = True
                self._park(row)

    def _step(self, j: int, kv_len: int, any_top_p: bool, rows: int) -> None:
        """Decode step ``j`` of a replay for the first ``rows`` rows: no host sync, fixed
        shapes."""
        s, eos = self.state.rows(rows) if rows < self.max_batch else self.state, self.cfg.eos
        step_rows = getattr(self._sampler, "step_rows", None)
        if step_rows is not None:  # the fused sampler does the bookkeeping below itself
            token, pos = step_rows(s, j, j == self.steps - 1, any_top_p)
            self._logits(s, self._forward(token, pos, kv_len=kv_len))
            return
        if self._sampler is not None:
            token, stop = self._sampler(s.logits, s.seen, s.step, s.top_k, s.top_p,
                                        s.temperature, s.penalty, any_top_p)  # fmt: skip
        else:
            barred = self._eos_col & (s.step < EOS_BLOCKED_STEPS)[:, None]  # (B, V)
            row_params = RowParams(
                top_k=s.top_k,
                top_p=s.top_p,
                temperature=s.temperature,
                penalty=s.penalty,
                max_top_k=min(TOP_K_CAP, self.cfg.vocab_size),
                any_top_p=any_top_p,
            )
            logits = s.logits.masked_fill(barred, -math.inf)
            token, stop = next_token(logits, s.seen, row_params, eos, True)
        emitted = s.active & ~stop & (s.step < s.limit)  # (B,)
        s.report[:, j] = torch.where(emitted, token, -1)
        s.active.copy_(emitted)
        s.seen.scatter_(1, token[:, None], True)
        pos = torch.minimum(s.input_pos, s.last_slot)  # (B,)
        self._logits(s, self._forward(token, pos, kv_len=kv_len))
        s.input_pos += 1
        s.step += 1
        if j == self.steps - 1:
            s.report[:, self.steps] = s.active.long()

    @staticmethod
    def _logits(state: _BatchState, logits: Tensor) -> None:
        if logits.data_ptr() != state.logits.data_ptr():  # else written in place
            state.logits.copy_(logits)

    def _steps(self, kv_len: int, any_top_p: bool, rows: int) -> None:
        for j in range(self.steps):
            self._step(j, kv_len, any_top_p, rows)

    def _replay(self, kv_len: int, any_top_p: bool, rows: int) -> None:
        if not self.use_graphs:
            self._steps(kv_len, any_top_p, rows)
            return
        key = (kv_len, any_top_p, rows)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = self._capture(*key)
        graph.replay()

    def _capture(self, kv_len: int, any_top_p: bool, rows: int) -> torch.cuda.CUDAGraph:
        """Capture one replay; the warm-up steps run on the live state, which is restored
        (their KV writes land in slots the real steps overwrite before anyone reads them)."""
        saved = {name: t.clone() for name, t in vars(self.state).items()}
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self._steps(kv_len, any_top_p, rows)
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        for name, t in vars(self.state).items():
            t.copy_(saved[name])
        graph = torch.cuda.CUDAGraph()
        with capturing(graph, self.device, self._stream, self._pool):
            self._steps(kv_len, any_top_p, rows)
        return graph

    def capture_prefills(self, lengths: Iterable[int]) -> int:
        """Capture the prefill graphs of the buckets of prompt ``lengths`` ahead of use.
        Call while no row is live: a capture writes row 0. Returns how many exist."""
        graphs = self._prefills
        if graphs is None:
            return 0
        # only the shapes are captured: a one-phone, one-token prompt, padded per bucket
        item = T2SInput(torch.zeros(1, dtype=torch.long), torch.zeros(self.cfg.bert_dim, 1),
                        torch.zeros(1, dtype=torch.long))  # fmt: skip
        like = pack_inputs([item], self.cfg).to(self.device)
        for size in sorted({graphs.padded(n) for n in lengths}):
            if size + 1 > self.max_seq or not graphs.capture(size, like):
                break
        return len(graphs.captured)

    def capture(self, up_to_slot: int) -> int:
        """Capture the graphs of every cache bucket up to ``up_to_slot``, for every row
        bucket, ahead of use (call while no row is live); returns how many graphs exist."""
        if not self.use_graphs:
            return 0
        last = min(self.max_seq, (up_to_slot // self.kv_bucket + 1) * self.kv_bucket)
        with torch.no_grad():
            for rows in self.buckets:
                for kv_len in range(self.kv_bucket, last + self.kv_bucket, self.kv_bucket):
                    key = (min(kv_len, self.max_seq), False, rows)
                    if key not in self._graphs:
                        self._graphs[key] = self._capture(*key)
        return len(self._graphs)


def drain(stream: RowStream) -> Iterator[Tensor]:
    """The stream's chunks, giving its row back however the consumer stops."""
    try:
        yield from stream
    finally:
        stream.close()
