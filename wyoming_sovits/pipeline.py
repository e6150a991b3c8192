"""From a voice and a sentence to 32 kHz audio: the GPT-SoVITS v2/v2Pro/v2ProPlus pipeline.

``Pipeline.load(models_dir)`` loads the five models of one weight set (layout of
``download.py``); ``prepare_prompt(voice)`` turns the voice's reference clip(s) into a
:class:`~wyoming_sovits.prompt.Prompt` (cached, see ``prompt.py``); ``synthesize(text,
prompt, cfg)`` yields float32 mono audio at 32 kHz, one array per sentence followed by the
voice's pause, or, when streaming, pieces of a sentence as its tokens are generated.

Request text is cut into sentences with upstream's ``cut5`` (after every , . ; ? ! 、 and
their full-width forms): it is what upstream's HTTP API uses, and short fragments give
the first audio soonest and keep the GPT on track (long fragments drift or loop). Each
sentence is one GPT run (prompt phones + sentence phones, prompt tokens first) and one
SoVITS decode of the sentence's phones alone, against the voice's ``ge``. Streaming
decodes the growing token prefix at chunk boundaries (``next_decode_at``): the text
encoder and the flow see the whole prefix each time, and the vocoder only the frames not
yet sent (eagerly ``vocode_windows``, batched on CUDA ``SoVITSGraphs.decode_windows``; a
single stream's graph decode still vocodes all of them: one row is launch-bound).

Fast path (``fast``, on by default on CUDA): the GPT decodes through a
``fast.T2SGraphRunner`` (decode step and sampling replayed from CUDA graphs, a host sync
every ``STREAM_CHUNK_TOKENS`` steps) and SoVITS decodes through ``fast.SoVITSGraphs``
(one graph per length bucket); both are built lazily per weight file, and ``warm_up``
captures the graphs a typical request needs. Requests they cannot serve take the eager
path: top_k above ``fast.TOP_K_CAP`` (GPT), speed != 1 or more tokens or phones than the
largest bucket (SoVITS). A prompt too long for the runner's cache gets a larger runner.
With ``max_streams`` > 1 a ``batching.ContinuousBatcher`` replaces the runner: sentences
of several requests (the engine steps ``max_concurrent`` of them round-robin) share each
decode step, one cache row each. ``gpt_kernels="triton"`` decodes through such a batch (of one
row by default) with ``kernels.FusedDecodeStep`` and ``kernels.FusedSampler``.

Randomness: a request's seed drives two streams, sampling and the SoVITS prior noise, so
the noise does not depend on how the tokens were drawn (eager and graph paths give the
same audio for the same tokens). The eager GPT samples from a generator of its own; the
graph runner samples from the device's default generator (the only one a CUDA graph can
use), which is seeded per request when the request has a seed. The noise comes from a
``NoiseTape`` in fixed blocks, so a streamed sentence (a growing prefix re-decoded) and the
same sentence decoded whole get the same noise.

Sync and single-threaded by design: ``engine.py`` owns the thread that calls it (several
requests' generators interleave on that one thread when batching).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .batching import PREFILL_BUCKET, BatchFullError, ContinuousBatcher, RowStream, drain
from .checkpoints import LoadedGPT, LoadedSoVITS, LoadedSV, load_gpt, load_sovits, load_sv
from .download import DEFAULT_VERSION, weight_set
from .fast import (
    GPT_STREAM_PRIORITY,
    TOP_K_CAP,
    FastPathError,
    SoVITSGraphs,
    T2SGraphRunner,
    decode_stream,
)
from .generate import (
    DEFAULT_MAX_NEW_TOKENS,
    EOS_BLOCKED_STEPS,
    SamplingError,
    SamplingParams,
    generate,
    generate_stream,
)
from .kernels import triton_available
from .models.bert import BertFeatures
from .models.ssl import HubertEncoder
from .models.t2s import PackedPrompt, T2SInput, Text2Semantic, pack_inputs
from .models.vits import SoVITS, VocoderWindows
from .prompt import (
    OUTPUT_RATE,
    Prompt,
    PromptStore,
    TextFeatures,
    load_reference,
    prompt_key,
    prompt_text,
    reference_ge,
    reference_tokens,
    text_features,
)
from .settings import GPT_KERNELS, SynthesisConfig
from .text import TextFrontendError, pre_seg_text, replace_consecutive_punctuation
from .voices import VoiceProfile

if TYPE_CHECKING:
    from .kernels import TuneResult

_LOGGER = logging.getLogger(__name__)

SPLIT_METHOD = "cut5"
TOKEN_RATE = 50  # upstream's ``hz``: its generation cap is hz * data.max_sec of the GPT file
# Streaming: decode after this many new tokens (first piece small for latency), then in
# chunks that grow (see ``next_decode_at``), and hold back the last few tokens' audio,
# which still changes once later tokens give it context.
STREAM_FIRST_TOKENS = 12
STREAM_NEXT_TOKENS = 24
STREAM_MAX_CHUNK_TOKENS = 96
STREAM_HOLD_TOKENS = 4
# A request's later sentences start with the audio of the ones before (and their pauses)
# in hand: their first decode comes at this many times the tokens' worth of it (at least
# ``STREAM_FIRST_TOKENS``; ``first_decode_at``), so a sentence after a longer one is
# decoded once, not in growing chunks. At 3x real time or faster (what the chunks above
# assume) the client still holds 2/3 of that audio when the sentence starts, and 1.5x its
# tokens take half of it to generate: the audio comes with a sixth of it to spare. The
# vocoder then skips the re-decoded hold-back and context of each chunk. Measured on the
# H200 (bench/README, same warm pipeline, 3 rounds each way): 64 streams of two 4 s
# sentences 612x -> 658x real time in all, first audio alike.
SENTENCE_LEAD = 1.5
# The fast path on CUDA runs the vocoder as channels-last 2-D convolutions
# (``Generator.use_channels_last``): cuDNN's half-precision kernels read that layout.
SOVITS_CHANNELS_LAST = True
# With Triton, that vocoder's residual blocks run as ``vocoder_kernels``' fused convolutions
# (leaky ReLU, padding mask, residual and each stage's average in the convolution's
# launch; ``Generator.use_fused_resblocks``), and one row goes through it too. Measured on
# the H200 (bench/README): the vocoder at 64 rows x 96 frames 90 -> 59 ms, one row of 100
# frames 4.4 ms (1-D cuDNN) -> 2.2 ms; one stream's RTF 0.0167 -> 0.0151, 64 streams
# 2-6% more in all.
SOVITS_FUSED_RESBLOCKS = True
STREAM_CHUNK_TOKENS = 4  # tokens per look at the GPT while streaming (graph replay size)
# Fast path: cache slots the runner keeps for the prompt (transcript + sentence phones,
# reference tokens) on top of the token cap, and its attention bucket. A longer prompt
# rebuilds the runner with room for it (its graphs are then captured again).
FAST_PROMPT_SLOTS = 1024
FAST_KV_BUCKET = 256
# Batched SoVITS decoding (``max_streams`` > 1): streams that reach a decode point in the
# same round of the engine decode together when there are at least this many of them
# (fewer replay their own CUDA graphs one after another). On CUDA one call is the two
# replays of ``SoVITSGraphs.decode_windows`` (the vocoder only over the unsent frames), or,
# where those are off or do not hold the rows, one replay of a (rows, tokens, phones)
# bucket (``SoVITSGraphs.decode_rows``, exact per row); without graphs it is an eager
# batched call of at most this many tokens (the vocoder's activations grow with the total
# length). Measured on the H200, eager calls cost 130-170 ms each in the server, mostly
# first-shape work, as every batch had a new shape.
BATCH_DECODE_MIN_ROWS = 4
BATCH_DECODE_MAX_TOKENS = 2048
# With several streams a decode's audio comes back without the worker waiting for it: the
# streams whose decodes are in flight keep the GPT batch stepping meanwhile
# (``ContinuousBatcher.pump``). With at least this many streams (CUDA) the decodes also run
# on a CUDA stream of their own, of higher priority than the GPT's, so the GPU runs both at
# once. Measured on the H200 (bench/README): 64 streams' first audio 166 -> 148 ms and
# 318x -> 370x real time in all; at 16 and 4 streams first audio is 7-16 ms later that way
# (the GPT's kernels slow a small decode), for no more throughput.
OVERLAP_DECODES_MIN_STREAMS = 32
# Where the decodes overlap the GPT that way, the GPT's batch replays run on a stream of
# higher priority still (``fast.GPT_STREAM_PRIORITY``), and a stream about to launch the
# queued decodes first queues a GPT replay, so the GPU steps the GPT while the host builds
# the decodes' inputs (9-13 ms for 64 rows). Below the decodes' priority the step's small
# kernels wait for the vocoder's grids: at 64 streams a sentence's 25 replays of 4 tokens
# took 308 ms with decodes running (~4 ms each alone). Measured on the H200 (bench/README,
# same warm pipeline, 3 rounds each way): 570x -> 590x real time in all, first audio alike.
GPT_ABOVE_DECODES = True
# With several streams a request's next sentence is opened (its text, its GPT row) while
# the last decode of the sentence before is on its way (``Pipeline._open_next``), so its
# text runs while the GPU decodes and its prefill and first steps beside that decode.
OPEN_NEXT_SENTENCE_AHEAD = True
# With one stream on CUDA (the Triton batch of ``max_streams`` 1) a request's sentences
# decode side by side in a batch of this many rows: once its first sentence has produced
# tokens the next ones are opened, and each is spoken from its buffered tokens when its turn
# comes. A replay steps only the live rows' bucket (``batching.row_buckets``: 1 or 4), so a
# one-sentence request pays for one row. Each row's draws are keyed by the request's seed
# and the row's step, so the tokens are those of decoding the sentences one by one.
SENTENCE_ROWS = 4
# Queued decodes split into calls that minimise the latent frames vocoded (rows x the
# widest window, as rows are padded to it) plus this many per call (a call's fixed cost:
# the latents replay and the launches, ~10 ms, what the H200 vocodes 600 frames in).
BATCH_DECODE_CALL_FRAMES = 512
# The Triton step's launch shapes are timed attending over this many cache slots (a
# typical prompt plus half a sentence).
TUNE_SLOTS = 384
# Warm-up captures SoVITS graphs for sentences up to this many tokens (10 s) and phones.
WARM_UP_TOKENS = 250
WARM_UP_PHONES = 128
# With several streams, warm-up also captures the batched SoVITS graphs of the first
# streamed decodes (12, 36 and 72 tokens; windowed, unmasked where they fill the window
# bucket) of sentences up to this many phones, for 2 rows up to ``max_streams``: a bucket
# first met in a request costs 130-260 ms to capture (H200).
WARM_UP_BATCH_DECODES = 3
WARM_UP_BATCH_PHONES = 64
NOISE_BLOCK_FRAMES = 64
# Sentences whose phones and BERT features are kept (the same announcement to four rooms,
# "OK", "Done"): a 15-word English sentence costs ~1 ms of the worker's time, and a burst
# of requests waits for every one of them before its batched prefill. At most this many
# sentences and phones (each phone's features are 4 KB: 8,192 phones are 32 MB).
TEXT_CACHE_SENTENCES = 256
TEXT_CACHE_PHONES = 8192
_NOISE_SALT = 0x6E6F697365  # noise seed = seed ^ salt: a stream apart from sampling's
DEFAULTS = SynthesisConfig(
    top_k=15,
    top_p=1.0,
    temperature=1.0,
    repetition_penalty=1.35,
    speed=1.0,
    noise_scale=0.5,
    fragment_pause=0.3,
)


class BatchTooSmallError(FastPathError):
    """A sentence needs more cache slots than the shared batch has while rows decode in it
    (the batch is rebuilt larger once none does)."""


class ModelsNotFoundError(FileNotFoundError):
    """Weight files the pipeline needs are not where it looks for them."""

    def __init__(self, missing: list[Path], version: str) -> None:
        self.missing = missing
        listed = "\n  ".join(str(p) for p in missing)
        super().__init__(
            f"missing model file(s) for {version}:\n  {listed}\n"
            f"run `wyoming-sovits models download --version {version}` "
            "or point --data-dir at a folder that has them"
        )


@dataclass(frozen=True)
class ModelPaths:
    """The files of one weight set; ``sv`` only for v2Pro/v2ProPlus."""

    gpt: Path
    sovits: Path
    hubert: Path  # folder
    bert: Path  # folder
    sv: Path | None = None

    @classmethod
    def in_folder(cls, models_dir: Path, version: str = DEFAULT_VERSION) -> ModelPaths:
        """Where ``download.py`` puts ``version``'s files; raises ``ModelsNotFoundError``."""
        files = weight_set(version)
        missing = [models_dir / f.path for f in files if not (models_dir / f.path).is_file()]
        if missing:
            raise ModelsNotFoundError(missing, version)
        role = {f.role: models_dir / f.path for f in files}
        return cls(
            gpt=role["gpt"],
            sovits=role["sovits"],
            hubert=role["hubert"].parent,
            bert=role["bert"].parent,
            sv=role.get("sv"),
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is CUDA when there is a GPU, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` is float16 on a GPU (as upstream) and float32 on CPU (fp16 is slow there)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
            dtype
        ]
    except KeyError:
        raise ValueError(
            f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}"
        ) from None


@dataclass(frozen=True)
class Fragment:
    """One sentence's results: its features, tokens (T,), latents and audio (T·1280,)."""

    text: str
    features: TextFeatures
    tokens: Tensor
    m_p: Tensor  # (1, inter, T_f) prior mean from the text encoder
    z: Tensor  # (1, inter, T_f) the decoder input after the reverse flow
    audio: np.ndarray


class NoiseTape:
    """Prior noise (1, C, frames) whose first frames stay the same however many are asked for.

    Streaming re-decodes a growing prefix; drawing fresh noise each time would make the
    already-sent audio and the re-decoded audio disagree. The tape grows in whole blocks,
    so its content depends only on the generator, not on the sizes asked for in between.
    """

    def __init__(self, channels: int, generator: torch.Generator, device: torch.device) -> None:
        self.generator = generator
        self.tape = torch.empty(channels, 0, device=device)

    def take(self, frames: int) -> Tensor:
        while self.tape.shape[1] < frames:
            shape = (self.tape.shape[0], NOISE_BLOCK_FRAMES)
            more = torch.randn(shape, generator=self.generator, device=self.tape.device)
            self.tape = torch.cat([self.tape, more], dim=1)
        return self.tape[None, :, :frames]  # (1, C, frames)


@dataclass(frozen=True)
class RequestRandom:
    """The random streams of one request: GPT sampling (eager path) and SoVITS noise."""

    sampling: torch.Generator
    noise: torch.Generator


def next_decode_at(decoded: int) -> int:
    """Token count of the streamed decode after one of ``decoded`` tokens.

    Each decode re-runs the text encoder and flow over the whole prefix (the vocoder only
    the unsent frames, but for one stream's graphs), so chunks grow: the first after
    ``STREAM_FIRST_TOKENS``, then at least ``STREAM_NEXT_TOKENS`` more and otherwise as many
    as were decoded (12, 36, 72, 144, 240, ...), capped at ``STREAM_MAX_CHUNK_TOKENS``. A
    10 s sentence costs 5 decodes instead of 10, which matters when many streams share
    the GPU. Playback never waits while generation runs at least 3x real time: the first
    chunk's 8 sent tokens (320 ms) must cover the next 24, and later chunks have more room.
    """
    if decoded <= 0:
        return STREAM_FIRST_TOKENS
    return decoded + min(STREAM_MAX_CHUNK_TOKENS, max(STREAM_NEXT_TOKENS, decoded))


def first_decode_at(banked_tokens: float) -> int:
    """Token count of a sentence's first streamed decode when its request has already sent
    ``banked_tokens`` tokens' worth of audio (0: the first sentence, ``STREAM_FIRST_TOKENS``;
    else ``SENTENCE_LEAD`` times that, at least as many)."""
    return max(STREAM_FIRST_TOKENS, int(SENTENCE_LEAD * max(0.0, banked_tokens)))


def stream_sent_frames(tokens: int, frames_per_token: int) -> int:
    """Latent frames a stream has sent when it decodes at ``tokens`` tokens (speed 1): all
    but the last ``STREAM_HOLD_TOKENS`` of the decode before (0 at the first)."""
    sent, decoded = 0, 0
    while (point := next_decode_at(decoded)) < tokens:
        sent, decoded = max(0, point - STREAM_HOLD_TOKENS) * frames_per_token, point
    return sent


def batch_warm_up_buckets(graphs: SoVITSGraphs, max_streams: int) -> list[tuple[int, int, int]]:
    """(tokens, phones, rows) of the batched SoVITS graphs warm-up captures: the first
    ``WARM_UP_BATCH_DECODES`` streamed decode points, the phone buckets up to
    ``WARM_UP_BATCH_PHONES``, every row bucket from 2 to ``max_streams`` that fits a graph:
    ``SoVITSGraphs.windowed`` ones where they serve the rows, else whole decodes'."""
    points, decoded = [], 0
    for _ in range(WARM_UP_BATCH_DECODES):
        decoded = next_decode_at(decoded)
        points.append(decoded)
    top = next((r for r in graphs.row_buckets if r >= max_streams), graphs.row_buckets[-1])
    rows = [r for r in graphs.row_buckets if 2 <= r <= top]
    phones = [b for b in graphs.phone_buckets if b <= WARM_UP_BATCH_PHONES]

    def served(tokens: int, ph: int, r: int) -> bool:
        return _windowed_point(graphs, tokens, ph, r) is not None or graphs.fits(tokens, ph, r)

    return [
        (tokens, ph, r) for r in rows for tokens in points for ph in phones if served(tokens, ph, r)
    ]


def host_audio(pieces: Sequence[Tensor]) -> list[np.ndarray]:
    """Rows' audio on the device as float32 arrays, fetched in one copy (a ``.cpu()`` per
    row would wait on the GPU once per row)."""
    audio, done = host_audio_soon(pieces)
    if done is not None:
        done.synchronize()
    return audio


def host_audio_soon(pieces: Sequence[Tensor]) -> tuple[list[np.ndarray], torch.cuda.Event | None]:
    """``host_audio`` without waiting: the arrays (in pinned memory) hold the audio once the
    event, recorded on the current stream after the copy, has completed (None: at once)."""
    if not pieces:
        return [], None
    flat = torch.cat([p.reshape(-1) for p in pieces]).float()
    done = None
    if flat.device.type == "cuda":
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
    else:
        host = flat
    return np.split(host.numpy(), np.cumsum([p.numel() for p in pieces])[:-1]), done


def with_pause(audio: np.ndarray, pause_s: float) -> np.ndarray:
    """A fragment as it is played: peak-limited to 1 (upstream's guard), then silence."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
    pause = np.zeros(int(OUTPUT_RATE * pause_s), dtype=np.float32)
    return np.concatenate([audio.astype(np.float32), pause])


def vocode_windows(
    sovits: SoVITS, z: Tensor, ge: Tensor, frames: Sequence[int], starts: Sequence[int]
) -> list[Tensor]:
    """Each row's audio of latent frames ``starts[b]`` to ``frames[b]`` of ``z`` (B, C, T_f)
    ((frames - start)·640 samples), the same as vocoding all its frames gives.

    Streaming needs only the audio it has not sent, and the text encoder and flow must see
    the whole prefix, but the vocoder does not: it runs from the vocoder's reach
    (``VitsConfig.vocoder_reach_frames``) before each start. Each window is widened over its
    row's earlier frames to the widest (more context, the same samples); rows too short for
    that are zero-padded and masked by their lengths.
    """
    windows = VocoderWindows.of(starts, frames, sovits.cfg.vocoder_reach_frames, fill=True)
    index = windows.index.to(z.device).expand(-1, z.shape[1], -1)
    lengths = windows.lengths.to(z.device) if windows.ragged else None
    audio = sovits.vocode(torch.gather(z, 2, index), ge, lengths)  # (B, 1, width·640)
    return windows.cut(audio, sovits.cfg.upsample_factor)


@torch.inference_mode()
def decode_latents(
    sovits: SoVITS,
    tokens: Tensor,
    phone_ids: Tensor,
    ge: Tensor,
    speed: float,
    noise_scale: float,
    noise: NoiseTape | None,
    from_frame: int = 0,
) -> tuple[Tensor, Tensor, np.ndarray]:
    """Tokens (T,) + phones (L,) -> prior mean, flow output (1, C, T_f) and the audio of
    latent frames ``from_frame`` on ((T_f - from_frame)·640,; see ``vocode_windows``)."""
    param = next(sovits.parameters())
    codes = tokens.to(param.device)[None, None]  # (1, 1, T)
    text = phone_ids.to(param.device)[None]  # (1, L)
    ge = ge.to(param.device, param.dtype)  # (1, gin, 1)
    m, logs, mask = sovits.encode_text_semantic(codes, text, ge, speed)  # (1, C, T_f)
    z_p = m
    if noise_scale > 0 and noise is not None:
        z_p = m + noise.take(m.shape[2]).to(m.dtype) * torch.exp(logs) * noise_scale
    z = sovits.flow_reverse(z_p, mask, ge)  # (1, C, T_f)
    (audio,) = vocode_windows(sovits, z * mask, ge, [z.shape[2]], [from_frame])
    return m, z, audio.float().cpu().numpy()


@torch.inference_mode()
def decode_batch(
    sovits: SoVITS,
    rows: Sequence[tuple[Tensor, Tensor, Tensor, Tensor | None, float]],
    from_frames: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Several sentences' audio in one SoVITS call (speed 1): each row is tokens (T,),
    phones (L,), ge (1, gin, 1), prior noise (1, C, 2T) or None, and its noise scale.

    Rows are zero-padded to the longest and masked by their lengths (encoders, flow and
    vocoder), so each row's audio is that of decoding it alone. With ``from_frames``, row
    ``b``'s audio starts at latent frame ``from_frames[b]`` (``vocode_windows``).
    """
    param = next(sovits.parameters())
    dev, dt = param.device, param.dtype
    step = sovits.cfg.frames_per_token
    batch = len(rows)
    n_tok = torch.tensor([len(r[0]) for r in rows])
    n_ph = torch.tensor([len(r[1]) for r in rows])
    codes = torch.zeros(1, batch, int(n_tok.max()), dtype=torch.long)
    text = torch.zeros(batch, int(n_ph.max()), dtype=torch.long)
    for b, (tokens, phones, _, _, _) in enumerate(rows):
        codes[0, b, : len(tokens)] = tokens.cpu()
        text[b, : len(phones)] = phones.cpu()
    ge = torch.cat([r[2].to(dev, dt) for r in rows])  # (B, gin, 1)
    m, logs, mask = sovits.encode_text_semantic(
        codes.to(dev), text.to(dev), ge, 1.0, n_tok, n_ph
    )  # (B, C, T_f)
    prior = torch.zeros_like(m)
    scale = torch.zeros(batch, 1, 1, device=dev, dtype=m.dtype)
    for b, (tokens, _, _, noise, noise_scale) in enumerate(rows):
        if noise is not None and noise_scale > 0:
            prior[b, :, : len(tokens) * step] = noise[0].to(m.dtype)
            scale[b] = noise_scale
    z = sovits.flow_reverse(m + prior * torch.exp(logs) * scale, mask, ge)
    frames = [len(r[0]) * step for r in rows]
    starts = from_frames if from_frames is not None else [0] * batch
    return host_audio(vocode_windows(sovits, z * mask, ge, frames, starts))


@dataclass(eq=False)
class _DecodeRequest:
    """A streamed sentence's pending SoVITS decode, until a batch decodes it."""

    prompt: Prompt
    tokens: Tensor
    feats: TextFeatures
    cfg: SynthesisConfig
    noise: NoiseTape
    from_frame: int = 0  # the audio wanted starts at this latent frame
    audio: np.ndarray | None = None
    error: Exception | None = None
    done: torch.cuda.Event | None = None  # ``audio`` holds the samples once this completes

    @property
    def launched(self) -> bool:
        return self.audio is not None or self.error is not None

    def ready(self) -> bool:
        """Decoded (or failed), its audio on the host."""
        return self.error is not None or (
            self.audio is not None and (self.done is None or self.done.query())
        )

    def wait(self) -> None:
        if self.done is not None:
            self.done.synchronize()


@dataclass(frozen=True)
class _GptPlan:
    """One sentence's GPT run: the model, its input, sampling, cap and the decoder to use
    (the shared batch, the graph runner, or neither: the eager loop)."""

    model: Text2Semantic
    item: T2SInput
    params: SamplingParams
    cap: int
    batcher: ContinuousBatcher | None
    runner: T2SGraphRunner | None

    def packed(self) -> PackedPrompt:
        return pack_inputs([self.item], self.model.config)


@dataclass
class _NextSentence:
    """A request's next sentence, opened while the one before is still being decoded: its
    features and, when it decodes in the shared batch, its row (already taking its turns);
    or the error opening it raised, which is the next sentence's to raise."""

    feats: TextFeatures | None = None
    row: RowStream | None = None
    error: Exception | None = None
    sentence: str = ""

    def close(self) -> None:
        if self.row is not None:
            self.row.close()


class _TextCache:
    """LRU of sentences' features, at most ``TEXT_CACHE_SENTENCES`` sentences and
    ``TEXT_CACHE_PHONES`` phones (``phones``: how many it holds now)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str], TextFeatures] = OrderedDict()
        self.phones = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def values(self) -> list[TextFeatures]:
        return list(self._entries.values())

    def get(self, key: tuple[str, str]) -> TextFeatures | None:
        feats = self._entries.get(key)
        if feats is not None:
            self._entries.move_to_end(key)
        return feats

    def put(self, key: tuple[str, str], feats: TextFeatures) -> None:
        self._entries[key] = feats
        self.phones += len(feats.ids)
        while self._entries and (
            len(self._entries) > TEXT_CACHE_SENTENCES or self.phones > TEXT_CACHE_PHONES
        ):
            _, dropped = self._entries.popitem(last=False)
            self.phones -= len(dropped.ids)

    def clear(self) -> None:
        self._entries.clear()
        self.phones = 0


class Pipeline:
    """The loaded models and the three operations the engine needs (``SynthesisBackend``)."""

    def __init__(
        self,
        paths: ModelPaths,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        cache_dir: Path | None = None,
        streaming: bool | None = None,
        fast: bool | None = None,
        gpt_kernels: str = "auto",
        max_streams: int = 1,
        sovits_compile: bool = False,
    ) -> None:
        """Load every model in ``paths``; ``cache_dir`` None keeps prompts in memory only.

        ``fast`` None: the fast path (see the module docstring) when the device is CUDA.
        True on a CPU runs the GPT runner's step eagerly (tests); SoVITS graphs need CUDA.
        ``streaming`` None: partial sentences are sent when the fast path runs on CUDA. A
        CPU works near real time, and the re-decodes of the growing prefix (with the
        vocoder windowed, 1.3x the SoVITS time of one whole decode) would make it fall
        behind the playback.
        ``gpt_kernels`` "triton": the fast path's GPT step is ``kernels.FusedDecodeStep``
        (five Triton launches per layer) instead of the module's own forward; "auto" (the
        default): "triton" for the fast path on CUDA when Triton is installed, else "torch".
        ``max_streams`` > 1 (fast path only): that many sentences decode together, their
        GPT rows batched in every step (``batching.ContinuousBatcher``); the engine then
        steps that many requests at once (``max_concurrent``).
        ``sovits_compile`` (fast path on CUDA): the SoVITS graphs capture the decode compiled
        by TorchInductor (``SoVITSGraphs(compile=True)``; minutes of compiling at warm-up).
        """
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        if gpt_kernels not in GPT_KERNELS:
            raise ValueError(f"gpt_kernels must be one of {', '.join(GPT_KERNELS)}")
        self.paths = paths
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_new_tokens: int | None = None  # None: the GPT file's own cap
        self.fast = self.device.type == "cuda" if fast is None else fast
        on_gpu = self.fast and self.device.type == "cuda"
        self.streaming = on_gpu if streaming is None else streaming
        # Hook for another decode-step forward (e.g. a fused kernel): model -> a callable
        # like ``model(tokens, input_pos, kv_len=...)``; read when a runner is built.
        self.t2s_forward_factory: Callable[[Text2Semantic], Callable[..., Tensor]] | None = None
        if gpt_kernels == "auto":
            gpt_kernels = "triton" if on_gpu and triton_available() else "torch"
        self.gpt_kernels = gpt_kernels
        if gpt_kernels == "triton":
            self.t2s_forward_factory = _fused_step
        self._runners: dict[Path, T2SGraphRunner] = {}
        self._batchers: dict[Path, ContinuousBatcher] = {}
        self.max_streams = max_streams if self.fast else 1
        # The batch serves several streams, and with the Triton kernels also a single one:
        # its per-row step lets the fused sampler replace ~40 sampling kernels with one.
        self._batching = self.fast and (self.max_streams > 1 or gpt_kernels == "triton")
        # rows one request's sentences decode in side by side (read when the batch is built)
        one_stream = self._batching and self.max_streams == 1 and self.device.type == "cuda"
        self.sentence_rows = SENTENCE_ROWS if one_stream else 1
        self.sovits_compile = sovits_compile
        self._sovits_graphs: dict[Path, SoVITSGraphs] = {}
        self._pending_decodes: list[_DecodeRequest] = []
        self._decode_stream: torch.cuda.Stream | None = None  # see OVERLAP_DECODES_MIN_STREAMS
        self._gpts: dict[Path, LoadedGPT] = {}
        self._sovits: dict[Path, LoadedSoVITS] = {}
        self.gpt = self._gpt(paths.gpt)
        self.sovits = self._sovits_model(paths.sovits)
        self.sv: LoadedSV | None = None
        if paths.sv is not None:
            self.sv = load_sv(paths.sv, self.device, self.dtype)
            self.sv.model.eval()
        self.hubert = HubertEncoder.load(paths.hubert, self.device, self.dtype)
        self.bert = BertFeatures.load(paths.bert, self.device, self.dtype)
        self.store = PromptStore(cache_dir)
        self._text_cache = _TextCache()
        self._bert_zeros: dict[str, bool] = {}  # prompt key -> its features are zeros

    @classmethod
    def load(
        cls,
        models_dir: Path,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        version: str = DEFAULT_VERSION,
        cache_dir: Path | None = None,
        fast: bool | None = None,
        streaming: bool | None = None,
        gpt_kernels: str = "auto",
        max_streams: int = 1,
        sovits_compile: bool = False,
    ) -> Pipeline:
        """Load ``version``'s weight set from ``models_dir``; prompts are cached on disk in
        ``cache_dir`` (default ``<models_dir>/prompt-cache``); the rest as in the constructor."""
        if gpt_kernels not in GPT_KERNELS:
            raise ValueError(f"gpt_kernels must be one of {', '.join(GPT_KERNELS)}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        models_dir = Path(models_dir)
        paths = ModelPaths.in_folder(models_dir, version)
        cache = cache_dir if cache_dir is not None else models_dir / "prompt-cache"
        return cls(
            paths,
            device=device,
            dtype=dtype,
            cache_dir=cache,
            fast=fast,
            streaming=streaming,
            gpt_kernels=gpt_kernels,
            max_streams=max_streams,
            sovits_compile=sovits_compile,
        )

    @property
    def sample_rate(self) -> int:
        return OUTPUT_RATE

    @property
    def max_concurrent(self) -> int:
        """Sentences the engine may step at once (their GPT rows share each decode step)."""
        return self.max_streams

    # ------------------------------------------------------------------ models per voice

    def _gpt(self, path: Path) -> LoadedGPT:
        if path not in self._gpts:
            _LOGGER.info("Loading GPT weights %s", path)
            loaded = load_gpt(path, self.device, self.dtype)
            loaded.model.eval()
            self._gpts[path] = loaded
        return self._gpts[path]

    def _sovits_model(self, path: Path) -> LoadedSoVITS:
        if path not in self._sovits:
            _LOGGER.info("Loading SoVITS weights %s", path)
            loaded = load_sovits(path, self.device, self.dtype)
            loaded.model.eval()
            if loaded.config.is_pro and self.paths.sv is None:
                raise ModelsNotFoundError(
                    [Path("sv/pretrained_eres2netv2w24s4ep4.ckpt")], loaded.version
                )
            if self.fast and self.device.type == "cuda" and SOVITS_CHANNELS_LAST:
                # (a compiled decode fuses the elementwise work its own way)
                fused = SOVITS_FUSED_RESBLOCKS and triton_available() and not self.sovits_compile
                loaded.model.dec.use_channels_last(min_rows=1 if fused else 2)
                if fused:
                    loaded.model.dec.use_fused_resblocks()
            self._sovits[path] = loaded
        return self._sovits[path]

    def _weights_of(self, voice: VoiceProfile) -> tuple[Path, Path]:
        """A voice's own fine-tuned files replace the defaults for that voice only."""
        return (voice.gpt_weights or self.paths.gpt, voice.sovits_weights or self.paths.sovits)

    def cap(self, gpt: LoadedGPT) -> int:
        """Most tokens per sentence: upstream's ``hz * max_sec`` and its 1500-step limit."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        max_sec = gpt.hparams.get("data", {}).get("max_sec", 54)
        return min(DEFAULT_MAX_NEW_TOKENS, int(TOKEN_RATE * float(max_sec)))

    # ------------------------------------------------------------------ prompt

    def prepare_prompt(self, voice: VoiceProfile) -> Prompt:
        """The voice's prompt, from memory, from the disk cache, or computed (3–10 s clip)."""
        ref = voice.reference
        gpt_path, sovits_path = self._weights_of(voice)
        clips = [ref.audio, *ref.aux_audio]
        model_files = [sovits_path, self.paths.hubert, self.paths.bert]
        if self.paths.sv is not None:
            model_files.append(self.paths.sv)
        key = prompt_key(clips, ref.text, ref.language, model_files)
        empty = torch.empty(0)
        template = Prompt(
            voice.name, voice.text_language, empty, empty, empty, empty, gpt_path, sovits_path, key
        )
        cached = self.store.get(key, template)
        if cached is not None:
            _LOGGER.debug("Voice %s: prompt from cache", voice.name)
            return cached
        prompt = self._compute_prompt(voice, template)
        self.store.put(prompt)
        return prompt

    def _compute_prompt(self, voice: VoiceProfile, template: Prompt) -> Prompt:
        ref = voice.reference
        sovits = self._sovits_model(template.sovits).model
        main = load_reference(ref.audio)
        aux = [load_reference(p, check_length=False) for p in ref.aux_audio]
        tokens = reference_tokens(self.hubert, sovits, main.wav16k)  # (T25,)
        sv = self.sv.model if self.sv is not None else None
        ge = reference_ge(sovits, sv, [main, *aux])  # (1, gin, 1)
        gpt = self._gpt(template.gpt)
        feats = text_features(
            prompt_text(ref.text, ref.language), ref.language, self.bert, gpt.config.bert_dim
        )
        _LOGGER.info(
            "Voice %s: prepared prompt (%.1f s clip, %d tokens, %d phones)",
            voice.name,
            main.seconds,
            len(tokens),
            len(feats.ids),
        )
        return Prompt(
            voice=template.voice,
            text_language=template.text_language,
            phone_ids=feats.ids,
            bert=feats.bert,
            tokens=tokens,
            ge=ge,
            gpt=template.gpt,
            sovits=template.sovits,
            key=template.key,
        )

    # ------------------------------------------------------------------ synthesis

    def sentences(self, text: str, language: str, split_method: str = SPLIT_METHOD) -> list[str]:
        """``text`` cut as the reference cuts it before synthesis."""
        return pre_seg_text(replace_consecutive_punctuation(text), language, split_method)

    def fragments(
        self,
        text: str,
        prompt: Prompt,
        cfg: SynthesisConfig,
        *,
        split_method: str = SPLIT_METHOD,
        generator: torch.Generator | None = None,
    ) -> Iterator[Fragment]:
        """Each sentence of ``text`` synthesised in one go (no pause added). With
        ``sentence_rows`` > 1 the next sentences are opened once the first has tokens, and
        decode side by side with it (``SENTENCE_ROWS``).

        ``generator`` replaces the eager GPT sampler's (the noise keeps its own stream).
        """
        cfg = DEFAULTS.merged(cfg)
        language = cfg.text_language or prompt.text_language
        rng = self._random(cfg.seed, generator)
        if self._side_by_side:
            yield from self._fragments_side_by_side(text, prompt, cfg, language, split_method, rng)
            return
        sovits = self._sovits_model(prompt.sovits).model
        for sentence in self.sentences(text, language, split_method):
            feats = self._sentence_features(sentence, language)
            if feats is None:
                continue
            tokens = self._generate(prompt, feats, cfg, rng)
            noise = NoiseTape(sovits.cfg.inter_channels, rng.noise, self.device)
            m, z, audio = self._decode(prompt, tokens, feats, cfg, noise)
            yield Fragment(sentence, feats, tokens.cpu(), m.float().cpu(), z.float().cpu(), audio)

    def _fragments_side_by_side(
        self,
        text: str,
        prompt: Prompt,
        cfg: SynthesisConfig,
        language: str,
        split_method: str,
        rng: RequestRandom,
    ) -> Iterator[Fragment]:
        sovits = self._sovits_model(prompt.sovits).model
        sentences = iter(self.sentences(text, language, split_method))
        ahead: deque[_NextSentence] = deque([self._open_next(sentences, prompt, language, cfg)])
        try:
            while ahead:
                upcoming = ahead.popleft()
                if upcoming.error is not None:
                    raise upcoming.error
                feats = upcoming.feats
                if feats is None:
                    return
                try:
                    if upcoming.row is None:  # it waited for its turn (no room beside)
                        tokens = self._generate(prompt, feats, cfg, rng)
                    else:
                        pieces = []
                        for chunk in drain(upcoming.row):
                            pieces.append(chunk)
                            if len(chunk):  # the first tokens are out: open the next ones
                                self._open_side_by_side(ahead, sentences, prompt, language, cfg)
                        tokens = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
                finally:
                    upcoming.close()
                if not ahead:
                    ahead.append(self._open_next(sentences, prompt, language, cfg))
                noise = NoiseTape(sovits.cfg.inter_channels, rng.noise, self.device)
                m, z, audio = self._decode(prompt, tokens, feats, cfg, noise)
                yield Fragment(
                    upcoming.sentence, feats, tokens.cpu(), m.float().cpu(), z.float().cpu(), audio
                )
        finally:
            for opened in ahead:
                opened.close()

    def synthesize(
        self,
        text: str,
        prompt: object,
        cfg: SynthesisConfig,
        *,
        stream: bool | None = None,
        split_method: str = SPLIT_METHOD,
    ) -> Iterator[np.ndarray]:
        """Float32 32 kHz audio: per sentence its audio and then the pause, or, streaming,
        pieces of each sentence as they are decoded and then its pause.

        ``prompt`` is typed ``object`` to satisfy the engine's backend protocol; it must be
        what ``prepare_prompt`` returned.
        """
        prompt = _as_prompt(prompt)
        if not (self.streaming if stream is None else stream):
            pause = _f(DEFAULTS.merged(cfg).fragment_pause)
            for fragment in self.fragments(text, prompt, cfg, split_method=split_method):
                yield with_pause(fragment.audio, pause)
            return
        yield from self._stream(text, prompt, DEFAULTS.merged(cfg), split_method)

    def _stream(
        self, text: str, prompt: Prompt, cfg: SynthesisConfig, split_method: str
    ) -> Iterator[np.ndarray]:
        """Each sentence's pieces, then its pause. With several streams the next sentence
        is opened while the last decode of the one before runs (``_open_next``); with one,
        the next ``sentence_rows`` - 1 once the current one has sent audio, and they decode
        side by side (``SENTENCE_ROWS``)."""
        language = cfg.text_language or prompt.text_language
        rng = self._random(cfg.seed)
        pause = np.zeros(int(OUTPUT_RATE * _f(cfg.fragment_pause)), dtype=np.float32)
        sentences = iter(self.sentences(text, language, split_method))
        ahead: deque[_NextSentence] = deque()
        side_by_side = self._side_by_side

        def open_next() -> None:
            ahead.append(self._open_next(sentences, prompt, language, cfg))

        meanwhile = open_next if OPEN_NEXT_SENTENCE_AHEAD and self.max_streams > 1 else None
        banked = 0  # samples sent so far: the audio a later sentence starts with in hand
        try:
            while True:
                upcoming = ahead.popleft() if ahead else None
                if upcoming is None:
                    feats, sentence = self._next_sentence(sentences, language)
                    upcoming = _NextSentence(feats, sentence=sentence)
                if upcoming.error is not None:
                    raise upcoming.error
                feats, row = upcoming.feats, upcoming.row
                if feats is None:
                    return
                chunks = drain(row) if row is not None else None
                try:
                    pieces = self._stream_sentence(
                        prompt, feats, cfg, rng, chunks, meanwhile,
                        row if side_by_side else None, banked,
                    )  # fmt: skip
                    with contextlib.closing(pieces):  # a cancelled request stops it now
                        for piece in pieces:
                            banked += len(piece)
                            yield piece
                            if side_by_side and len(piece):
                                self._open_side_by_side(ahead, sentences, prompt, language, cfg)
                finally:
                    upcoming.close()  # its row back, even if the sentence never read it
                banked += len(pause)
                yield pause
        finally:
            for opened in ahead:  # opened, never read: its row goes back
                opened.close()

    def _open_side_by_side(
        self,
        ahead: deque[_NextSentence],
        sentences: Iterator[str],
        prompt: Prompt,
        language: str,
        cfg: SynthesisConfig,
    ) -> None:
        """Open the request's next sentences until ``sentence_rows`` - 1 wait (the current
        one holds a row) or none is left (the last opened is empty) or one failed."""
        while len(ahead) < self.sentence_rows - 1:
            if ahead and (ahead[-1].feats is None or ahead[-1].row is None):
                return  # no sentence left, an error to raise in turn, or not batched
            ahead.append(self._open_next(sentences, prompt, language, cfg, later_if_too_long=True))

    def _next_sentence(
        self, sentences: Iterator[str], language: str
    ) -> tuple[TextFeatures | None, str]:
        """The next speakable sentence's features and text (None, "": no sentence left)."""
        for sentence in sentences:
            feats = self._sentence_features(sentence, language)
            if feats is not None:
                return feats, sentence
        return None, ""

    def _open_next(
        self,
        sentences: Iterator[str],
        prompt: Prompt,
        language: str,
        cfg: SynthesisConfig,
        *,
        later_if_too_long: bool = False,
    ) -> _NextSentence:
        """The next sentence's features and, in the shared batch, its row: opened now, so
        its text runs while the GPU decodes the sentence before, and its prefill and first
        steps beside that decode. ``later_if_too_long``: a sentence the batch has too few
        slots or no free row for comes without a row (opened in its turn, once the batch
        can grow and the rows before it are free)."""
        try:
            feats, sentence = self._next_sentence(sentences, language)
            if feats is None:
                return _NextSentence()
            try:
                plan = self._plan(prompt, feats, cfg)
                if plan.batcher is None:
                    return _NextSentence(feats, sentence=sentence)
                row = plan.batcher.open(plan.item, plan.params, plan.cap, cfg.seed)
            except (BatchTooSmallError, BatchFullError):
                if not later_if_too_long:
                    raise
                return _NextSentence(feats, sentence=sentence)
            return _NextSentence(feats, row, sentence=sentence)
        except Exception as err:  # the next sentence's to raise, after this one's audio
            return _NextSentence(error=err)

    def _stream_sentence(
        self,
        prompt: Prompt,
        feats: TextFeatures,
        cfg: SynthesisConfig,
        rng: RequestRandom,
        chunks: Iterator[Tensor] | None = None,
        meanwhile: Callable[[], None] | None = None,
        row: RowStream | None = None,
        banked: int = 0,
    ) -> Generator[np.ndarray, None, None]:
        """Re-decode the growing token prefix at each chunk boundary and send the audio that
        later tokens no longer change much (all but the last few tokens' worth). ``row``
        (a sentence decoded side by side with the one before): no decode while more of its
        tokens are already buffered, so a sentence whose tokens are all there when its turn
        comes is decoded once.

        Each decode vocodes only from the first unsent latent frame (with context): its
        audio starts at sample ``offset``, that frame's first. ``chunks``: the sentence's
        tokens, when its row was opened ahead (else opened here); ``meanwhile`` is called
        once the GPT is done and the last decode is on its way (``_decode_soon``);
        ``banked``: samples the request has sent before this sentence (``first_decode_at``).
        """
        sovits = self._sovits_model(prompt.sovits).model
        noise = NoiseTape(sovits.cfg.inter_channels, rng.noise, self.device)
        tokens: list[Tensor] = []
        up = sovits.cfg.upsample_factor
        per_token = up * sovits.cfg.frames_per_token / _f(cfg.speed)
        n, sent, decoded, target = 0, 0, 0, first_decode_at(banked / per_token)  # n: tokens
        audio, offset = np.zeros(0, dtype=np.float32), 0
        if chunks is None:
            chunks = self._token_chunks(prompt, feats, cfg, rng)
        for chunk in chunks:
            if len(chunk) == 0:  # the row waits for its (batched) prefill: step the others
                yield np.zeros(0, dtype=np.float32)
                continue
            tokens.append(chunk.cpu())
            n += len(chunk)
            if n < target or (row is not None and row.buffer):
                continue
            target = next_decode_at(n)
            offset = sent // up * up
            audio = yield from self._decode_soon(tokens, prompt, feats, cfg, noise, sent // up)
            decoded = n
            ready = int((n - STREAM_HOLD_TOKENS) * per_token)
            if ready > sent:
                yield np.clip(audio[sent - offset : ready - offset], -1.0, 1.0)
                sent = ready
        if decoded != n:
            offset = sent // up * up
            audio = yield from self._decode_soon(
                tokens, prompt, feats, cfg, noise, sent // up, meanwhile
            )
        if offset + len(audio) > sent:
            yield np.clip(audio[sent - offset :], -1.0, 1.0)

    def _decode_soon(
        self,
        tokens: list[Tensor],
        prompt: Prompt,
        feats: TextFeatures,
        cfg: SynthesisConfig,
        noise: NoiseTape,
        from_frame: int,
        meanwhile: Callable[[], None] | None = None,
    ) -> Generator[np.ndarray, None, np.ndarray]:
        """The prefix's audio from latent frame ``from_frame`` on, decoded together with
        other streams' pending decodes.

        With one stream (``max_streams`` 1) this is ``_decode_all``. Otherwise the decode is
        queued and an empty chunk is yielded: the engine then steps the other streams, which
        queue theirs, and the first of them to come back decodes the whole queue at once.
        While its audio is on its way the stream keeps the GPT batch stepping and yields
        empty chunks; with no row to step it waits. ``meanwhile`` runs once the decode is on
        its way (not when it is already done), before the first such step: a stream opens
        its next sentence there, and the empty chunk after it lets the other streams open
        theirs, so that one prefill serves them all.
        """
        if self.max_streams <= 1:
            return self._decode_all(tokens, prompt, feats, cfg, noise, from_frame)
        request = _DecodeRequest(prompt, torch.cat(tokens), feats, cfg, noise, from_frame)
        self._pending_decodes.append(request)
        try:
            yield np.zeros(0, dtype=np.float32)
            if not request.launched:
                if GPT_ABOVE_DECODES and self._overlapping:
                    self._step_gpt_meanwhile()  # the GPU steps while the host builds inputs
                self._flush_decodes()
            if meanwhile is not None and not request.ready():
                meanwhile()
                yield np.zeros(0, dtype=np.float32)
            while not request.ready():
                if not self._step_gpt_meanwhile():
                    request.wait()
                    break
                yield np.zeros(0, dtype=np.float32)
        finally:  # a stream closed while waiting leaves the queue
            if request in self._pending_decodes:
                self._pending_decodes.remove(request)
        if request.error is not None:
            raise request.error
        assert request.audio is not None
        return request.audio

    def _step_gpt_meanwhile(self) -> bool:
        """One more GPT replay for the batches' live rows, queued or collected without
        waiting (``ContinuousBatcher.pump``); False when no batch has a row to step."""
        stepping = False
        for batcher in self._batchers.values():
            stepping = batcher.pump() or stepping
        return stepping

    @property
    def _overlapping(self) -> bool:
        """Whether the decodes run on a CUDA stream of their own (``OVERLAP_DECODES_MIN_STREAMS``)."""
        return self.max_streams >= OVERLAP_DECODES_MIN_STREAMS and self.device.type == "cuda"

    def _side_stream(self) -> torch.cuda.Stream | None:
        """The decodes' own CUDA stream (``_overlapping``), or None: the current one, the
        GPT's. Decided once: every decode of a pipeline runs on one."""
        if self._decode_stream is None and self._overlapping:
            self._decode_stream = decode_stream(self.device)
        return self._decode_stream

    def _flush_decodes(self) -> None:
        """Decode every queued request: batched when enough share a SoVITS file and speed
        1, else one by one (graphs). A failure is each affected request's own error.
        On CUDA the batched calls' audio is still on its way when this returns
        (``_DecodeRequest.ready``); with many streams they run on their own stream."""
        side = self._side_stream()
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            self._decode_pending()

    def _decode_pending(self) -> None:
        pending, self._pending_decodes = self._pending_decodes, []
        groups: dict[Path, list[_DecodeRequest]] = {}
        alone: list[_DecodeRequest] = []
        for request in pending:
            if _f(request.cfg.speed) == 1.0:
                groups.setdefault(request.prompt.sovits, []).append(request)
            else:
                alone.append(request)
        for path, group in groups.items():
            if len(group) < BATCH_DECODE_MIN_ROWS:
                alone += group
                continue
            for batch in self._decode_calls(path, group):
                self._decode_rows(path, batch)
        for request in alone:
            try:
                request.audio = self._decode_all(
                    [request.tokens],
                    request.prompt,
                    request.feats,
                    request.cfg,
                    request.noise,
                    request.from_frame,
                )
            except Exception as err:  # raised in the request's own stream
                request.error = err

    def _decode_calls(
        self, path: Path, requests: list[_DecodeRequest]
    ) -> list[list[_DecodeRequest]]:
        """Queued decodes of one SoVITS file split into calls: sorted by their vocoder
        window, the contiguous runs that each fit one call and minimise the frames vocoded
        plus ``BATCH_DECODE_CALL_FRAMES`` per call. With graphs a call is one bucket and
        costs ``SoVITSGraphs.price`` (its buckets' frames, and a capture's price where it is
        yet to be captured); without, at most ``BATCH_DECODE_MAX_TOKENS`` tokens, costing
        rows x the widest window. 63 streams' short windows and one long one are two
        calls, not one padded to the long window; 40 streams are 32 + 8 rather than a
        bucket of 64, where those are captured."""
        graphs = self._graphs_for(path)
        vits = self._sovits_model(path).model.cfg
        per_token = vits.frames_per_token
        # each request's sizes once: (window, tokens, phones, sent), sorted by window
        sizes = sorted(
            ((vits.window_frames(len(r.tokens), r.from_frame), len(r.tokens), len(r.feats.ids),
              r.from_frame > 0, k) for k, r in enumerate(requests)),
            key=lambda size: (size[0], size[4]),  # ties in arrival order
        )  # fmt: skip
        ordered = [requests[size[4]] for size in sizes]
        n = len(ordered)
        # a run's price depends on its row count through its row bucket: priced once each
        rows_key = (
            [0] + [graphs.price_rows(r) for r in range(1, n + 1)] if graphs is not None else []
        )
        prices: dict[tuple[int, int, int, int, bool, int], int | None] = {}
        cost, cut = [0] + [-1] * n, [0] * (n + 1)
        for j in range(1, n + 1):
            tokens = phones = total = 0
            shortest, sent, widest = 1 << 30, False, sizes[j - 1][0]
            for i in range(j - 1, -1, -1):
                _, n_tok, n_ph, from_sent, _ = sizes[i]
                tokens, phones = max(tokens, n_tok), max(phones, n_ph)
                total, sent = total + n_tok, sent or from_sent
                shortest = min(shortest, n_tok * per_token)
                rows = j - i
                if graphs is None:
                    price: int | None = rows * widest
                    if total > BATCH_DECODE_MAX_TOKENS:
                        price = None
                else:
                    key = (tokens, phones, rows_key[rows], widest, sent, shortest)
                    if key in prices:
                        price = prices[key]
                    else:
                        price = prices[key] = graphs.price(*key)
                if price is None:
                    if rows > 1:
                        break  # a longer run does not fit either
                    price = widest  # one sentence no graph serves: eager
                price += cost[i] + BATCH_DECODE_CALL_FRAMES
                if cost[j] < 0 or price < cost[j]:
                    cost[j], cut[j] = price, i
        calls = []
        while n > 0:
            calls.append(ordered[cut[n] : n])
            n = cut[n]
        return calls[::-1]

    def _decode_rows(self, path: Path, batch: list[_DecodeRequest]) -> None:
        sovits = self._sovits_model(path).model
        rows: list[tuple[Tensor, Tensor, Tensor, Tensor | None, float]] = []
        for r in batch:
            frames = len(r.tokens) * sovits.cfg.frames_per_token
            scale = _f(r.cfg.noise_scale)
            rows.append((r.tokens, r.feats.ids, r.prompt.ge, r.noise.take(frames), scale))
        graphs = self._graphs_for(path)
        try:
            starts = [r.from_frame for r in batch]
            decoded = None if graphs is None else self._graph_rows(graphs, rows, starts)
            done = None
            if decoded is not None:
                audios, done = host_audio_soon(decoded)
            else:
                audios = decode_batch(sovits, rows, starts)
            for request, audio in zip(batch, audios, strict=True):
                request.audio, request.done = audio, done
        except Exception as err:  # raised in each request's own stream
            for request in batch:
                request.error = err

    @staticmethod
    def _graph_rows(
        graphs: SoVITSGraphs,
        rows: list[tuple[Tensor, Tensor, Tensor, Tensor | None, float]],
        starts: list[int],
    ) -> list[Tensor] | None:
        """Rows' audio from their start frames, from one bucket's graphs: the windowed
        graphs where ``SoVITSGraphs.windowed`` (the vocoder skips what was sent), else (and
        when the windowed graphs are off) the whole decode, cut; None when no graph serves
        the rows (decode them eagerly)."""
        tokens, phones = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        window = max(graphs.window_frames(len(r[0]), s) for r, s in zip(rows, starts, strict=True))
        if graphs.windowed(tokens, phones, len(rows), window, any(starts)):
            try:
                return graphs.decode_windows(rows, starts)
            except FastPathError as err:
                _LOGGER.debug("whole SoVITS decodes: %s", err)
        if not graphs.fits(tokens, phones, len(rows)):
            return None
        up = graphs.model.cfg.upsample_factor
        return [a[s * up :] for a, s in zip(graphs.decode_rows(rows), starts, strict=True)]

    def _decode_all(
        self,
        tokens: list[Tensor],
        prompt: Prompt,
        feats: TextFeatures,
        cfg: SynthesisConfig,
        noise: NoiseTape,
        from_frame: int = 0,
    ) -> np.ndarray:
        all_tokens = torch.cat(tokens) if tokens else torch.zeros(0, dtype=torch.long)
        if len(all_tokens) == 0:
            return np.zeros(0, dtype=np.float32)
        return self._decode(prompt, all_tokens, feats, cfg, noise, from_frame)[2]

    def _sentence_features(self, sentence: str, language: str) -> TextFeatures | None:
        """Phones + BERT of a sentence; None (skipped, as upstream) when nothing is speakable.
        Recent sentences' features are kept (``_TextCache``: they depend on the text, the
        language mode and the BERT model alone)."""
        key = (sentence, language)
        feats = self._text_cache.get(key)
        if feats is not None:
            return feats
        try:
            feats = text_features(sentence, language, self.bert, self.gpt.config.bert_dim)
        except TextFrontendError as err:
            _LOGGER.warning("Skipping %r: %s", sentence, err)
            return None
        self._text_cache.put(key, feats)
        return feats

    def _plan(self, prompt: Prompt, feats: TextFeatures, cfg: SynthesisConfig) -> _GptPlan:
        """What one sentence's GPT run needs, and which decoder serves it."""
        gpt = self._gpt(prompt.gpt)
        zeros = feats.bert_zeros and self._prompt_bert_zeros(prompt)
        phone_ids, bert = _t2s_text(prompt, feats, zeros)
        params, cap = _sampling(cfg), self.cap(gpt)
        slots = len(phone_ids) + len(prompt.tokens)
        batcher = self._batcher_for(prompt.gpt, slots, params, cap)
        runner = None if batcher is not None else self._runner_for(prompt.gpt, slots, params, cap)
        item = T2SInput(phone_ids, bert, prompt.tokens, bert_zeros=zeros)
        return _GptPlan(gpt.model, item, params, cap, batcher, runner)

    def _prompt_bert_zeros(self, prompt: Prompt) -> bool:
        """Whether a prompt's transcript features are all zeros (not Chinese), once per
        prompt: packing a batch then skips reading them."""
        zeros = self._bert_zeros.get(prompt.key)
        if zeros is None:
            zeros = self._bert_zeros[prompt.key] = not bool(prompt.bert.any())
        return zeros

    def _generate(
        self, prompt: Prompt, feats: TextFeatures, cfg: SynthesisConfig, rng: RequestRandom
    ) -> Tensor:
        """The sentence's new tokens (T,), from the batch, the graph runner or the eager loop."""
        plan = self._plan(prompt, feats, cfg)
        if plan.batcher is not None:
            chunks = list(self._token_chunks(prompt, feats, cfg, rng, plan))
            return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
        if plan.runner is not None:
            (tokens,) = plan.runner.generate_packed(plan.packed(), [plan.params], plan.cap)
            return tokens
        item, params = plan.item, plan.params
        return generate(
            plan.model,
            item.phone_ids,
            item.bert,
            item.prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            repetition_penalty=params.repetition_penalty,
            max_new_tokens=plan.cap,
            generator=rng.sampling,
        )

    def _token_chunks(
        self,
        prompt: Prompt,
        feats: TextFeatures,
        cfg: SynthesisConfig,
        rng: RequestRandom,
        plan: _GptPlan | None = None,
    ) -> Iterator[Tensor]:
        """The sentence's new tokens as they come, ``STREAM_CHUNK_TOKENS`` at a time."""
        plan = plan or self._plan(prompt, feats, cfg)
        if plan.batcher is not None:
            return drain(plan.batcher.open(plan.item, plan.params, plan.cap, cfg.seed))
        if plan.runner is not None:
            return plan.runner.stream_tokens(plan.packed(), plan.params, plan.cap)
        item = plan.item
        return generate_stream(
            plan.model,
            item.phone_ids,
            item.bert,
            item.prompt_tokens,
            params=plan.params,
            max_new_tokens=plan.cap,
            generator=rng.sampling,
            chunk_size=STREAM_CHUNK_TOKENS,
        )

    def _decode(
        self,
        prompt: Prompt,
        tokens: Tensor,
        feats: TextFeatures,
        cfg: SynthesisConfig,
        noise: NoiseTape,
        from_frame: int = 0,
    ) -> tuple[Tensor, Tensor, np.ndarray]:
        """Prior mean, flow output (1, C, T_f) and the audio of latent frames ``from_frame``
        on ((T_f - from_frame)·640,): graphs when they serve the request (speed 1, lengths
        within the buckets; they vocode the whole prefix), else eager."""
        sovits = self._sovits_model(prompt.sovits).model
        speed, scale = _f(cfg.speed), _f(cfg.noise_scale)
        graphs = self._graphs_for(prompt.sovits)
        if graphs is None or speed != 1.0 or not graphs.fits(len(tokens), len(feats.ids)):
            return decode_latents(
                sovits, tokens, feats.ids, prompt.ge, speed, scale, noise, from_frame
            )
        frames = len(tokens) * sovits.cfg.frames_per_token
        prior = (
            noise.take(frames)
            if scale > 0
            else torch.zeros(1, sovits.cfg.inter_channels, frames, device=self.device)
        )  # (1, C, T_f)
        m, z, audio = graphs.decode_latents(tokens, feats.ids, prompt.ge, prior, scale)
        start = min(from_frame, z.shape[2]) * sovits.cfg.upsample_factor
        return m, z, audio[start:].float().cpu().numpy()

    def _random(self, seed: int | None, sampling: torch.Generator | None = None) -> RequestRandom:
        """A request's generators: a fixed seed gives the same audio for the same text.

        With a seed and the fast path on, the device's default generator (the graph
        runner's; on a CPU, torch's global one) is seeded too; the engine runs one request
        at a time, so that is safe.
        """
        base = seed if seed is not None else secrets.randbits(63)
        if seed is not None and self.fast:
            _seed_default_generator(self.device, seed)
        return RequestRandom(
            sampling=sampling or self._generator(base), noise=self._generator(base ^ _NOISE_SALT)
        )

    def _generator(self, seed: int | None) -> torch.Generator:
        """A generator on the device seeded with ``seed``; no seed, a fresh one."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else secrets.randbits(63))
        return generator

    # ------------------------------------------------------------------ fast path

    def _runner_for(
        self, path: Path, prompt_len: int, params: SamplingParams, cap: int
    ) -> T2SGraphRunner | None:
        """The GPT runner of ``path`` for a ``prompt_len``-slot prompt; None: eager."""
        if not self.fast or params.top_k > TOP_K_CAP:
            return None
        return self._runner(path, prompt_len + cap, cap)

    def _batcher_for(
        self, path: Path, prompt_len: int, params: SamplingParams, cap: int
    ) -> ContinuousBatcher | None:
        """The shared batch of ``path`` when ``max_streams`` > 1; None: one-request paths.

        With a batch, no other path may touch the model's cache (it holds live rows), so a
        request the batch cannot serve is refused rather than decoded another way. The
        Triton kernels always decode through a batch (of one row without ``max_streams``).
        """
        if not self._batching:
            return None
        if params.top_k > TOP_K_CAP:
            raise SamplingError(
                f"top_k {params.top_k}: the batched GPT (--max-streams, --gpt-kernels triton) "
                f"serves top_k <= {TOP_K_CAP}"
            )
        return self._batcher(path, prompt_len + cap, cap)

    def _batcher(self, path: Path, slots: int, cap: int) -> ContinuousBatcher:
        batcher = self._batchers.get(path)
        if batcher is not None and _fits(batcher, slots, cap):
            return batcher
        if batcher is not None and batcher.live_rows:
            raise BatchTooSmallError("a longer request needs a bigger batch while sentences decode")
        model = self._gpt(path).model
        max_seq, max_new = _cache_size(slots, cap)
        forward, sampler = self._batch_step(model)
        one_stream = self.max_streams == 1 and self.device.type == "cuda"
        batcher = ContinuousBatcher(
            model,
            self._batch_rows,
            max_seq,
            max_new_tokens=max_new,
            steps_per_sync=STREAM_CHUNK_TOKENS,
            kv_bucket=FAST_KV_BUCKET,
            forward=forward,
            sampler=sampler,
            use_graphs=self.device.type == "cuda",
            # several streams: rows opened in the same round of the engine prefill together
            defer_prefill=self.max_streams > 1,
            # one stream: queue the next replay before reading this one (H200, one row:
            # ~40 us less per token). Several: the SoVITS decodes the engine interleaves
            # would wait behind it (16 streams: first audio 113 vs 88 ms; 64: 1081 vs 648)
            run_ahead=one_stream,
            # the prefill graphs serve a sentence alone in row 0 (one stream's first)
            prefill_bucket=PREFILL_BUCKET if one_stream else 0,
            replay_priority=GPT_STREAM_PRIORITY
            if GPT_ABOVE_DECODES and self._overlapping
            else None,
        )
        _LOGGER.info(
            "GPT batch for %s: %d rows x %d cache slots", path.name, self._batch_rows, max_seq
        )
        self._batchers[path] = batcher
        return batcher

    @property
    def _side_by_side(self) -> bool:
        """Whether one request's sentences decode side by side (``SENTENCE_ROWS``)."""
        return self.max_streams == 1 and self.sentence_rows > 1 and self._batching

    @property
    def _batch_rows(self) -> int:
        """The shared batch's rows: one per stream, or one request's sentence rows."""
        return self.max_streams if self.max_streams > 1 else max(1, self.sentence_rows)

    def _batch_step(
        self, model: Text2Semantic
    ) -> tuple[Callable[..., Tensor] | None, Callable[..., tuple[Tensor, Tensor]] | None]:
        """The batch's decode-step forward and sampler: the Triton pair with
        ``gpt_kernels="triton"`` (tuned and compiled here), another factory's forward, or
        the PyTorch step (None, None). Triton failing on this GPU (a compiler, driver or
        architecture it does not support) is logged and the PyTorch step is used instead."""
        factory = self.t2s_forward_factory
        if factory is None:
            return None, None
        if factory is not _fused_step:
            return factory(model), None
        from .kernels import FusedSampler

        cfg = model.config
        try:
            # measured on the H200 (forward only, fp16; bench/README): the fused step 290 / 677 /
            # 1,418 us at 1 / 16 / 64 rows (at 64 with the row-blocked GEMVs), the PyTorch
            # step 1,190 / 1,294 / 1,912; the one-launch sampler and its bookkeeping
            # replace ~50 small kernels at any batch size
            rows = self._batch_rows
            forward = _fused_step(model, rows, tune_whole=self.max_streams > 1)
            sampler = FusedSampler(cfg.vocab_size, cfg.eos, EOS_BLOCKED_STEPS, rows,
                                   self.device, pdl=bool(getattr(forward, "pdl", False)))  # fmt: skip
            _compile_sampler(sampler, rows, cfg.vocab_size, self.device)
        except Exception as err:  # the server keeps serving, on the PyTorch step
            _LOGGER.warning(
                "The Triton GPT kernels failed on %s (%s: %s); using the PyTorch step",
                self.device,
                type(err).__name__,
                err,
            )
            self.t2s_forward_factory = None
            return None, None
        return forward, sampler

    def _runner(self, path: Path, slots: int, cap: int) -> T2SGraphRunner:
        """The runner of ``path``, (re)built when missing, too small or its cache replaced.

        A rebuild drops the graphs captured so far; they are captured again as needed.
        """
        runner = self._runners.get(path)
        if runner is not None and _fits(runner, slots, cap):
            return runner
        model = self._gpt(path).model
        max_seq, max_new = _cache_size(slots, cap)
        factory = self.t2s_forward_factory
        use_graphs = self.device.type == "cuda"
        runner = T2SGraphRunner(
            model,
            1,
            max_seq,
            max_new_tokens=max_new,
            steps_per_sync=STREAM_CHUNK_TOKENS,
            kv_bucket=FAST_KV_BUCKET,
            forward=factory(model) if factory is not None else None,
            use_graphs=use_graphs,
        )
        _LOGGER.info(
            "GPT fast path for %s: %d cache slots, %s",
            path.name,
            max_seq,
            "CUDA graphs" if use_graphs else "eager steps (no CUDA)",
        )
        self._runners[path] = runner
        return runner

    def _graphs_for(self, path: Path) -> SoVITSGraphs | None:
        """The SoVITS graphs of ``path`` (CUDA and the fast path only)."""
        if not self.fast or self.device.type != "cuda":
            return None
        if path not in self._sovits_graphs:
            model = self._sovits_model(path).model
            self._sovits_graphs[path] = SoVITSGraphs(model, compile=self.sovits_compile)
        return self._sovits_graphs[path]

    def warm_up(self, prompt: object, cfg: SynthesisConfig | None = None) -> float:
        """Capture the CUDA graphs a typical request with ``prompt`` (and ``cfg``) uses, so
        that the first real request does not pay for them; returns the seconds it took.

        GPT: every cache bucket a sentence of up to ``WARM_UP_PHONES`` phones can reach
        within the token cap. SoVITS: the buckets up to ``WARM_UP_TOKENS`` tokens and
        ``WARM_UP_PHONES`` phones (the first streamed chunk's included). Nothing to do
        (0 s) with the fast path off or without CUDA; other sizes are captured on first use.
        """
        prompt = _as_prompt(prompt)
        if not self.fast or self.device.type != "cuda":
            return 0.0
        start = time.perf_counter()
        merged = DEFAULTS.merged(cfg or SynthesisConfig())
        params = _sampling(merged)
        gpt = self._gpt(prompt.gpt)
        cap = self.cap(gpt)
        base = len(prompt.phone_ids) + len(prompt.tokens)  # the sentence's phones come on top
        gpt_graphs = prefills = 0
        if params.top_k <= TOP_K_CAP and self._batching:
            batcher = self._batcher(prompt.gpt, base + WARM_UP_PHONES + cap, cap)
            gpt_graphs = batcher.capture(base + WARM_UP_PHONES + cap)
            prefills = batcher.capture_prefills(range(base + 1, base + WARM_UP_PHONES + 1))
        elif params.top_k <= TOP_K_CAP:
            runner = self._runner(prompt.gpt, base + WARM_UP_PHONES + cap, cap)
            gpt_graphs = runner.capture(1, base + 1, cap + WARM_UP_PHONES, params.top_p < 1.0)
        graphs = self._graphs_for(prompt.sovits)
        assert graphs is not None  # fast on CUDA
        for phones in (b for b in graphs.phone_buckets if b <= WARM_UP_PHONES):
            for tokens in (b for b in graphs.token_buckets if b <= WARM_UP_TOKENS):
                graphs.capture(tokens, phones)
        if self.max_streams > 1 and _f(merged.speed) == 1.0:
            per_token = graphs.model.cfg.frames_per_token
            for tokens, phones, rows in batch_warm_up_buckets(graphs, self.max_streams):
                # windowed where decode_windows serves the point (whole if that is off),
                # unmasked where the prefixes fill the window bucket
                window = _windowed_point(graphs, tokens, phones, rows)
                if window is not None and graphs.capture_windows(
                    tokens, phones, rows, window, tokens * per_token < graphs.window_width(window)
                ):
                    continue
                if graphs.fits(tokens, phones, rows):
                    graphs.capture(tokens, phones, rows)
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        _LOGGER.info(
            "Warm-up of voice %s: %d GPT graphs (+ %d prefill), %d SoVITS graphs (+ %d "
            "batched, %d windowed) captured in %.2f s",
            prompt.voice,
            gpt_graphs,
            prefills,
            len(graphs.captured),
            len(graphs.captured_batches),
            len(graphs.captured_windows),
            seconds,
        )
        return seconds


def _windowed_point(graphs: SoVITSGraphs, tokens: int, phones: int, rows: int) -> int | None:
    """The window (frames) of ``rows`` streams at the streamed decode point of ``tokens``
    tokens and ``phones`` phones when they go through ``SoVITSGraphs.decode_windows``."""
    start = stream_sent_frames(tokens, graphs.model.cfg.frames_per_token)
    window = graphs.window_frames(tokens, start)
    return window if graphs.windowed(tokens, phones, rows, window, start > 0) else None


def _fits(decoder: T2SGraphRunner | ContinuousBatcher, slots: int, cap: int) -> bool:
    """The decoder still owns the model's cache and holds ``slots`` slots, ``cap`` tokens."""
    return decoder.owns_cache() and decoder.max_seq >= slots and decoder.max_new_tokens >= cap


def _cache_size(slots: int, cap: int) -> tuple[int, int]:
    """(cache slots, token cap) of a new runner or batch: room for the longest request and
    a long prompt, rounded to the cache bucket, so it is rarely rebuilt."""
    max_new = max(cap, DEFAULT_MAX_NEW_TOKENS)
    wanted = max(slots, max_new + FAST_PROMPT_SLOTS)
    return -(-wanted // FAST_KV_BUCKET) * FAST_KV_BUCKET, max_new


def _fused_step(
    model: Text2Semantic, rows: int = 1, tune_whole: bool = True
) -> Callable[..., Tensor]:
    """The Triton decode step for ``rows`` rows (imported only when asked for); for a batch
    of several rows one step per row bucket (``kernels.RowBucketSteps``), so that a replay
    of few live rows runs shapes made for few rows. On CUDA the launch shapes are measured
    on this GPU first (``kernels.tune_step``, at one row and, if ``tune_whole``, at
    ``rows``; the buckets between take theirs from those two; without ``tune_whole`` every
    bucket takes the one-row shapes: one request's few sentence rows)."""
    from .batching import row_buckets
    from .kernels import FusedDecodeStep, RowBucketSteps, bucket_step

    buckets = row_buckets(rows)
    if model.ar_predict_layer.weight.device.type != "cuda":
        if len(buckets) == 1:
            return FusedDecodeStep(model, rows)
        return RowBucketSteps({b: FusedDecodeStep(model, b) for b in buckets})
    one = _tuned(model, 1)
    whole = _tuned(model, rows) if tune_whole else one
    if len(buckets) == 1:
        return whole.step(model, rows)
    steps = {1: one.step(model, 1, pdl=whole.pdl), rows: whole.step(model, rows)}
    for b in buckets[1:-1]:
        steps[b] = bucket_step(model, b, one, whole, whole.pdl)
    return RowBucketSteps(steps)


def _tuned(model: Text2Semantic, rows: int) -> TuneResult:
    """``kernels.tune_step``'s launch shapes at ``rows`` rows, once per model and row count
    (tens of seconds on a first start, seconds once Triton's disk cache holds the
    kernels); the chosen shapes are logged."""
    from .kernels import gemv_label, tune_step

    key = (id(model), rows)
    tuned = _TUNED.get(key)
    if tuned is None:
        weight = model.ar_predict_layer.weight
        t0 = time.perf_counter()
        model.setup_caches(rows, TUNE_SLOTS + 1, dtype=weight.dtype, device=weight.device)
        tuned = _TUNED[key] = tune_step(
            model, rows, slots=TUNE_SLOTS, block_n=(1, 2, 4, 8, 16), warps=(4,),
            splits=(1, 4, 8, 16), block_s=(64, 128),
        )  # fmt: skip
        _LOGGER.info(
            "Triton GPT step tuned for %d row(s) in %.1f s: %s; attention %s; "
            "programmatic dependent launch %s",
            rows,
            time.perf_counter() - t0,
            "; ".join(f"{n}x{k}: {gemv_label(c)}" for (n, k), c in sorted(tuned.gemv.items())),
            tuned.attention,
            "on" if tuned.pdl else "off",
        )
    return tuned


_TUNED: dict[tuple[int, int], TuneResult] = {}


def _compile_sampler(
    sampler: Callable[..., tuple[Tensor, Tensor]], rows: int, vocab: int, device: torch.device
) -> None:
    """Run the fused sampler once per variant (with and without top-p), so that a kernel
    this GPU cannot compile fails here, at start, rather than in a request."""
    logits = torch.zeros(rows, vocab, device=device)
    seen = torch.zeros(rows, vocab, dtype=torch.bool, device=device)
    ints = torch.ones(rows, dtype=torch.long, device=device)
    ones = torch.ones(rows, device=device)
    for any_top_p in (False, True):
        sampler(logits, seen, ints, ints, ones, ones, ones, any_top_p)


def _as_prompt(prompt: object) -> Prompt:
    if not isinstance(prompt, Prompt):
        raise TypeError(f"need a Prompt from prepare_prompt, got {type(prompt)}")
    return prompt


def _seed_default_generator(device: torch.device, seed: int) -> None:
    """Seed the generator that draws without an explicit one on ``device`` (graph-safe)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def _t2s_text(prompt: Prompt, feats: TextFeatures, zeros: bool = False) -> tuple[Tensor, Tensor]:
    """The GPT reads the transcript's phones, then the sentence's: ids (L,), bert (D, L);
    ``zeros`` (both features are): bert is a zero view, not a copy."""
    ids = torch.cat([prompt.phone_ids, feats.ids])
    if zeros:
        return ids, prompt.bert.new_zeros(()).expand(prompt.bert.shape[0], len(ids))
    return ids, torch.cat([prompt.bert, feats.bert], dim=1)


def _sampling(cfg: SynthesisConfig) -> SamplingParams:
    return SamplingParams(
        top_k=int(cfg.top_k or 15),
        top_p=_f(cfg.top_p),
        temperature=_f(cfg.temperature),
        repetition_penalty=_f(cfg.repetition_penalty),
    )


def _f(value: float | None) -> float:
    """A field ``DEFAULTS.merged`` has filled in (typed Optional on ``SynthesisConfig``)."""
    if value is None:
        raise ValueError("synthesis option missing after merging with the defaults")
    return float(value)
