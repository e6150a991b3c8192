"""SoVITS decoder (GPT-SoVITS s2) for v1 / v2 / v2Pro / v2ProPlus, inference only.

Semantic tokens (25 Hz) + target phone ids + a global voice vector ``ge`` -> 32 kHz audio:
codebook lookup, x2 nearest upsampling to 50 Hz, a text/content encoder giving a Gaussian
prior (m, logs), a reversed normalising flow and a HiFi-GAN-style generator (1280 samples per
token). ``ge`` comes from a reference linear spectrogram (plus, for v2Pro/ProPlus, a speaker-
verification embedding). Parameter names equal the official ones except that weight-norm
pairs are folded into ``weight`` and the quantizer keeps only its codebook ``embed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .vits_modules import MRTE, AttentionEncoder, Flow, Generator, StyleEncoder, sequence_mask

VERSIONS = ("v1", "v2", "v2Pro", "v2ProPlus")
PRO_VERSIONS = frozenset({"v2Pro", "v2ProPlus"})
# Training-only tensors of the official files that this module does not hold.
TRAINING_ONLY_SUFFIXES = ("_codebook.embed_avg", "_codebook.cluster_size", "_codebook.inited")
TRAINING_ONLY_PREFIXES = ("enc_q.",)


class VitsConfigError(ValueError):
    """The hyper-parameters cannot describe a supported SoVITS model."""


class VitsInputError(ValueError):
    """Inputs to the SoVITS decoder have the wrong shape or are missing."""


@dataclass(frozen=True)
class VitsConfig:
    """Everything needed to build :class:`SoVITS`; the defaults are the official v2 model."""

    version: str = "v2"
    spec_channels: int = 1025
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    gin_channels: int = 512
    n_symbols: int = 732
    ref_bins: int = 704
    ssl_dim: int = 768
    codebook_size: int = 1024
    sv_dim: int = 20480
    mrte_channels: int = 512
    mrte_heads: int = 4
    style_hidden: int = 128
    flow_kernel_size: int = 5
    flow_n_layers: int = 4
    n_flows: int = 4
    sampling_rate: int = 32000
    hop_length: int = 640
    semantic_frame_rate: str = "25hz"

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise VitsConfigError(
                f"unsupported SoVITS version {self.version!r}; choose one of {VERSIONS}"
            )
        if self.semantic_frame_rate not in ("25hz", "50hz"):
            raise VitsConfigError(
                f"semantic_frame_rate {self.semantic_frame_rate!r}: choose '25hz' or '50hz'"
            )
        if self.resblock != "1":
            raise VitsConfigError(
                f"resblock {self.resblock!r} is not supported; official s2 models use '1'"
            )
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise VitsConfigError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise VitsConfigError(
                "resblock_kernel_sizes and resblock_dilation_sizes differ in length"
            )
        if self.upsample_initial_channel % 2 ** len(self.upsample_rates):
            raise VitsConfigError("upsample_initial_channel must halve once per upsampling stage")
        if not self.is_pro and self.gin_channels != self.mrte_channels:
            raise VitsConfigError(
                f"v1/v2 add ge to the MRTE: gin_channels must equal {self.mrte_channels}"
            )
        if self.ref_bins > self.spec_channels:
            raise VitsConfigError(
                f"ref_bins {self.ref_bins} exceeds spec_channels {self.spec_channels}"
            )

    @property
    def is_pro(self) -> bool:
        return self.version in PRO_VERSIONS

    @property
    def upsample_factor(self) -> int:
        """Output samples per encoder frame (640: 50 Hz frames at 32 kHz)."""
        return math.prod(self.upsample_rates)

    @property
    def vocoder_reach_frames(self) -> int:
        """How many latent frames before an output sample the vocoder reads (the left half
        of its receptive field, rounded up; 12 for the official models). Vocoding from this
        many frames before a frame gives that frame's audio as vocoding everything does.

        The reach adds up along the vocoder: ``conv_pre`` and ``conv_post`` (kernel 7), each
        transposed convolution ((kernel - 1 - padding) / rate input steps), and at each
        stage the widest residual block, two convolutions per dilation.
        """
        block = max(
            sum((d + 1) * (k - 1) // 2 for d in dilations)
            for k, dilations in zip(
                self.resblock_kernel_sizes, self.resblock_dilation_sizes, strict=True
            )
        )
        reach, rate = 3.0, 1  # conv_pre
        for up, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True):
            reach += (kernel - 1 - (kernel - up) // 2) / up / rate
            rate *= up
            reach += block / rate
        return math.ceil(reach + 3 / rate)  # conv_post

    @property
    def frames_per_token(self) -> int:
        return 2 if self.semantic_frame_rate == "25hz" else 1

    def window_frames(self, tokens: int, start: int) -> int:
        """Latent frames the vocoder runs over for a prefix of ``tokens`` codes whose audio
        is wanted from frame ``start`` on: from ``vocoder_reach_frames`` before it."""
        frames = tokens * self.frames_per_token
        return frames - max(0, min(start, frames) - self.vocoder_reach_frames)

    @classmethod
    def v1(cls) -> VitsConfig:
        return cls(version="v1", n_symbols=322, ref_bins=1025)

    @classmethod
    def v2(cls) -> VitsConfig:
        return cls()

    @classmethod
    def v2pro(cls) -> VitsConfig:
        return cls(version="v2Pro", gin_channels=1024)

    @classmethod
    def v2proplus(cls) -> VitsConfig:
        return cls(
            version="v2ProPlus",
            gin_channels=1024,
            upsample_initial_channel=768,
            upsample_kernel_sizes=(20, 16, 8, 2, 2),
        )

    @classmethod
    def preset(cls, version: str) -> VitsConfig:
        presets = {"v1": cls.v1, "v2": cls.v2, "v2Pro": cls.v2pro, "v2ProPlus": cls.v2proplus}
        if version not in presets:
            raise VitsConfigError(
                f"unsupported SoVITS version {version!r}; choose one of {VERSIONS}"
            )
        return presets[version]()

    @classmethod
    def from_hparams(cls, hps: Mapping[str, Any], version: str) -> VitsConfig:
        """Config from the ``config`` dict of an s2 file; absent fields keep the version's preset.

        Upstream always runs the 25 Hz semantic path, so a stored ``semantic_frame_rate`` is
        ignored, as it is there.
        """
        base = cls.preset(version)
        model, data = hps.get("model", {}), hps.get("data", {})
        if not isinstance(model, Mapping) or not isinstance(data, Mapping):
            raise VitsConfigError("s2 hparams need mappings under 'model' and 'data'")
        ints = (
            *("inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers"),
            *("kernel_size", "upsample_initial_channel", "gin_channels"),
        )
        tuples = ("resblock_kernel_sizes", "upsample_rates", "upsample_kernel_sizes")
        updates: dict[str, Any] = {k: int(model[k]) for k in ints if k in model}
        updates |= {k: tuple(int(v) for v in model[k]) for k in tuples if k in model}
        if "resblock_dilation_sizes" in model:
            dil = model["resblock_dilation_sizes"]
            updates["resblock_dilation_sizes"] = tuple(tuple(int(v) for v in d) for d in dil)
        if "resblock" in model:
            updates["resblock"] = str(model["resblock"])
        if "filter_length" in data:
            updates["spec_channels"] = int(data["filter_length"]) // 2 + 1
        if "sampling_rate" in data:
            updates["sampling_rate"] = int(data["sampling_rate"])
        if "hop_length" in data:
            updates["hop_length"] = int(data["hop_length"])
        if version == "v1" and "spec_channels" in updates:
            updates["ref_bins"] = updates["spec_channels"]
        try:
            return replace(base, **updates)
        except (TypeError, ValueError) as err:
            raise VitsConfigError(f"bad s2 hparams for {version}: {err}") from err


class _Codebook(nn.Module):
    embed: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("embed", torch.zeros(size, dim))


class _CodebookSlot(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = _Codebook(size, dim)


class _QuantizerLayers(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_CodebookSlot(size, dim)])


class SemanticQuantizer(nn.Module):
    """The single-level codebook mapping 25 Hz content vectors <-> semantic tokens."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.vq = _QuantizerLayers(size, dim)

    @property
    def embed(self) -> torch.Tensor:
        codebook = self.vq.layers[0]._codebook
        assert isinstance(codebook, _Codebook)
        return codebook.embed  # (K, D)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D, T) -> codes (1, B, T): nearest codebook entry by squared L2 distance."""
        e = self.embed
        v = x.transpose(1, 2)  # (B, T, D)
        # Same expansion of ||v - e||^2 as upstream so near-ties resolve the same way.
        dist = v.pow(2).sum(-1, keepdim=True) - 2 * v @ e.t() + e.pow(2).sum(-1)  # (B, T, K)
        return dist.argmin(dim=-1).unsqueeze(0)  # (1, B, T)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (1, B, T) -> vectors (B, D, T)."""
        return F.embedding(codes[0], self.embed).transpose(1, 2)


class TextEncoder(nn.Module):
    """Content frames + phones + voice -> prior statistics (m, logs) per 50 Hz frame."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        h, f, k = cfg.hidden_channels, cfg.filter_channels, cfg.kernel_size
        self.inter_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, h, 1)
        self.encoder_ssl = AttentionEncoder(h, f, cfg.n_heads, cfg.n_layers // 2, k)
        self.text_embedding = nn.Embedding(cfg.n_symbols, h)
        self.encoder_text = AttentionEncoder(h, f, cfg.n_heads, cfg.n_layers, k)
        self.mrte = MRTE(h, cfg.mrte_channels, cfg.mrte_heads)
        self.encoder2 = AttentionEncoder(h, f, cfg.n_heads, cfg.n_layers // 2, k)
        self.proj = nn.Conv1d(h, 2 * cfg.inter_channels, 1)

    def fuse(
        self,
        ssl: torch.Tensor,
        ssl_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        ge: torch.Tensor,
    ) -> torch.Tensor:
        """ssl (B, 768, T), text ids (B, L), ge (B, mrte, 1) -> content+text frames (B, H, T)."""
        y = self.ssl_proj(ssl * ssl_mask) * ssl_mask  # (B, H, T)
        y = self.encoder_ssl(y, ssl_mask)
        t = self.text_embedding(text).transpose(1, 2)  # (B, H, L)
        t = self.encoder_text(t * text_mask, text_mask)
        return self.mrte(y, ssl_mask, t, text_mask, ge)  # (B, H, T)

    def stats(self, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, T) -> m, logs (B, inter, T) each."""
        m, logs = (self.proj(y) * mask).split(self.inter_channels, dim=1)
        return m, logs


def _stretch(
    y: torch.Tensor, lengths: torch.Tensor, speed: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linearly resample each item to int(T / speed) + 1 frames (speed > 1 is faster)."""
    new_lengths = (lengths.double() / speed).long() + 1  # (B,) as int(T / speed) + 1
    if bool((lengths == y.shape[-1]).all()):
        y = F.interpolate(y, size=int(new_lengths[0]), mode="linear")  # (B, H, T')
        return y, torch.ones_like(y[:, :1]), new_lengths
    # Unequal lengths: stretch each item on its own so padding never leaks into speech.
    out = y.new_zeros(y.shape[0], y.shape[1], int(new_lengths.max()))  # (B, H, T')
    for b, (n, n_new) in enumerate(zip(lengths.tolist(), new_lengths.tolist(), strict=True)):
        out[b, :, :n_new] = F.interpolate(y[b : b + 1, :, :n], size=n_new, mode="linear")[0]
    return out, sequence_mask(new_lengths, out.shape[-1]).to(y.dtype), new_lengths


class SoVITS(nn.Module):
    """The s2 decoder, inference only (no posterior encoder, no dropout).

    Shapes: ``codes`` (1, B, T) semantic tokens at 25 Hz (the leading 1 is the single
    quantizer level, as upstream); ``text`` (B, L) phone ids; ``ge`` (B or 1, gin, 1);
    50 Hz encoder frames T_f = 2T; audio (B, 1, T_f * 640) at 32 kHz.
    """

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stride = cfg.frames_per_token
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, stride, stride=stride)
        self.quantizer = SemanticQuantizer(cfg.codebook_size, cfg.ssl_dim)
        self.ref_enc = StyleEncoder(cfg.ref_bins, cfg.gin_channels, cfg.style_hidden)
        self.enc_p = TextEncoder(cfg)
        self.flow = Flow(
            cfg.inter_channels,
            cfg.hidden_channels,
            cfg.flow_kernel_size,
            cfg.flow_n_layers,
            cfg.n_flows,
            cfg.gin_channels,
        )
        self.dec = Generator(
            cfg.inter_channels,
            cfg.resblock_kernel_sizes,
            cfg.resblock_dilation_sizes,
            cfg.upsample_rates,
            cfg.upsample_initial_channel,
            cfg.upsample_kernel_sizes,
            cfg.gin_channels,
        )
        if cfg.is_pro:
            self.sv_emb = nn.Linear(cfg.sv_dim, cfg.gin_channels)
            self.ge_to512 = nn.Linear(cfg.gin_channels, cfg.mrte_channels)
            self.prelu = nn.PReLU(cfg.gin_channels)

    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        """HuBERT features (B, 768, T50) -> prompt tokens (1, B, T25)."""
        return self.quantizer.encode(self.ssl_proj(ssl))

    def encode_reference(
        self,
        spec: torch.Tensor,
        sv_emb: torch.Tensor | None = None,
        spec_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Linear-magnitude spectrogram (B, 1025, T) [+ sv (B, sv_dim)] -> ge (B, gin, 1).

        ``sv_emb`` is required by v2Pro/ProPlus and ignored by v1/v2.
        """
        if spec.dim() != 3 or spec.shape[1] < self.cfg.ref_bins:
            raise VitsInputError(
                f"spec must be (B, >={self.cfg.ref_bins}, T); got {tuple(spec.shape)}"
            )
        lengths = torch.full((spec.shape[0],), spec.shape[2])
        if spec_lengths is not None:
            lengths = spec_lengths
        mask = sequence_mask(lengths.to(spec.device), spec.shape[2]).to(spec.dtype)  # (B, 1, T)
        ge = self.ref_enc(spec[:, : self.cfg.ref_bins] * mask, mask)  # (B, gin, 1)
        if not self.cfg.is_pro:
            return ge
        if sv_emb is None or sv_emb.shape != (spec.shape[0], self.cfg.sv_dim):
            got = None if sv_emb is None else tuple(sv_emb.shape)
            raise VitsInputError(
                f"{self.cfg.version} needs sv_emb of shape (B, {self.cfg.sv_dim}); got {got}"
            )
        return self.prelu(ge + self.sv_emb(sv_emb).unsqueeze(-1))  # (B, gin, 1)

    def encode_references(
        self, specs: Sequence[torch.Tensor], sv_embs: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Several references (each (B, 1025, T_i)) -> their mean ge (B, gin, 1), as upstream."""
        if not specs:
            raise VitsInputError("encode_references needs at least one spectrogram")
        svs: Sequence[torch.Tensor | None] = [None] * len(specs) if sv_embs is None else sv_embs
        if len(svs) != len(specs) or (self.cfg.is_pro and sv_embs is None):
            raise VitsInputError(f"{self.cfg.version}: give one sv embedding per reference")
        ges = [self.encode_reference(spec, sv) for spec, sv in zip(specs, svs, strict=True)]
        return torch.stack(ges).mean(0)

    def _check(self, codes: torch.Tensor, text: torch.Tensor, ge: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.shape[0] != 1:
            raise VitsInputError(f"codes must be (1, B, T); got {tuple(codes.shape)}")
        batch = codes.shape[1]
        if text.dim() != 2 or text.shape[0] != batch:
            raise VitsInputError(f"text must be ({batch}, L); got {tuple(text.shape)}")
        if ge.shape[0] not in (1, batch) or ge.shape[1:] != (self.cfg.gin_channels, 1):
            raise VitsInputError(
                f"ge must be ({batch} or 1, {self.cfg.gin_channels}, 1); got {tuple(ge.shape)}"
            )

    def encode_text_semantic(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        ge: torch.Tensor,
        speed: float = 1.0,
        code_lengths: torch.Tensor | None = None,
        text_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (1, B, T) + phones (B, L) + ge -> m, logs (B, inter, T_f) and mask (B, 1, T_f).

        T_f = 2T, or int(2T / speed) + 1 when speed != 1. Optional lengths (B,) mark padding.
        """
        self._check(codes, text, ge)
        if speed <= 0:
            raise VitsInputError(f"speed must be positive; got {speed}")
        batch, device = codes.shape[1], codes.device
        step = self.cfg.frames_per_token
        code_lengths = (
            code_lengths if code_lengths is not None else torch.full((batch,), codes.shape[2])
        )
        text_lengths = (
            text_lengths if text_lengths is not None else torch.full((batch,), text.shape[1])
        )
        frames = code_lengths.to(device) * step  # (B,)
        content = self.quantizer.decode(codes).repeat_interleave(step, dim=2)  # (B, 768, T_f)
        mask = sequence_mask(frames, content.shape[2]).to(content.dtype)  # (B, 1, T_f)
        text_mask = sequence_mask(text_lengths.to(device), text.shape[1]).to(
            content.dtype
        )  # (B, 1, L)
        ge_mrte = self.ge_to512(ge.transpose(1, 2)).transpose(1, 2) if self.cfg.is_pro else ge
        y = self.enc_p.fuse(content, mask, text, text_mask, ge_mrte)  # (B, H, T_f)
        y = self.enc_p.encoder2(y * mask, mask)
        if speed != 1.0:
            y, mask, _ = _stretch(y, frames, speed)
        m, logs = self.enc_p.stats(y, mask)
        return m, logs, mask

    @staticmethod
    def sample_prior(
        m: torch.Tensor,
        logs: torch.Tensor,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """z_p = m + N(0, 1) * exp(logs) * noise_scale, all (B, inter, T_f)."""
        noise = torch.randn(m.shape, generator=generator, device=m.device, dtype=m.dtype)
        return m + noise * torch.exp(logs) * noise_scale

    def flow_reverse(self, z_p: torch.Tensor, mask: torch.Tensor, ge: torch.Tensor) -> torch.Tensor:
        """Prior sample (B, inter, T_f) -> latent z (B, inter, T_f), conditioned on ge."""
        return self.flow.reverse(z_p, mask, ge)

    def vocode(
        self, z: torch.Tensor, ge: torch.Tensor, frames: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent (B, inter, T_f) -> audio (B, 1, T_f * 640) in [-1, 1]; ``frames`` (B,):
        each row's real frames when rows are zero-padded (each is then decoded as alone)."""
        return self.dec(z, ge, frames)

    def decode(
        self,
        codes: torch.Tensor,
        text: torch.Tensor,
        ge: torch.Tensor,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        code_lengths: torch.Tensor | None = None,
        text_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tokens (1, B, T) + phones (B, L) + ge -> audio (B, 1, T_f * 640), float in [-1, 1].

        With lengths, each item is decoded as if alone, and its audio past its own frames
        is zeroed (upstream has no batch path here).
        """
        m, logs, mask = self.encode_text_semantic(
            codes, text, ge, speed, code_lengths, text_lengths
        )
        z = self.flow_reverse(self.sample_prior(m, logs, noise_scale, generator), mask, ge)
        if code_lengths is None:
            return self.vocode(z * mask, ge)  # (B, 1, T_audio)
        audio = self.vocode(z * mask, ge, mask[:, 0].float().sum(-1))
        sample_mask = mask.repeat_interleave(self.cfg.upsample_factor, dim=2)  # (B, 1, T_audio)
        return audio * sample_mask


@dataclass(frozen=True)
class VocoderWindows:
    """Where each row's vocoder window lies when only its audio from latent frame
    ``start`` on is wanted: from the vocoder's reach before the start to the row's end.

    ``index`` (rows, 1, width) gathers the windows from a flow output, ``lengths`` (rows,)
    masks them (spare rows of a bucket read frame 0, length 1, or, filled, the first row's
    window), and ``cut`` takes each row's wanted samples from the vocoded windows."""

    starts: tuple[int, ...]
    lows: tuple[int, ...]
    widths: tuple[int, ...]
    index: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def of(
        cls,
        starts: Sequence[int],
        frames: Sequence[int],
        reach: int,
        rows: int | None = None,
        width: int | None = None,
        fill: bool = False,
    ) -> VocoderWindows:
        """``rows``/``width``: a bucket's (default: as many rows, the widest window).

        ``fill`` widens each window leftwards over the row's earlier frames up to
        ``width`` where the row has that many (more context, the same samples), so only
        rows shorter than the width are ragged: when none is, the vocoder needs no masks."""
        if fill and not starts:
            raise ValueError("filled windows need a row")
        clamped = [min(max(0, s), f) for s, f in zip(starts, frames, strict=True)]
        lows = [max(0, s - reach) for s in clamped]
        widths = [f - lo for f, lo in zip(frames, lows, strict=True)]
        rows = len(widths) if rows is None else rows
        width = max(widths) if width is None else width
        if fill:
            lows = [min(lo, max(0, f - width)) for lo, f in zip(lows, frames, strict=True)]
            widths = [f - lo for f, lo in zip(frames, lows, strict=True)]
        spare = rows - len(lows)
        first = torch.tensor(lows + lows[:1] * spare if fill else lows + [0] * spare)
        lengths = torch.tensor(widths + widths[:1] * spare if fill else widths + [1] * spare)
        first = first.view(rows, 1, 1)
        index = first + torch.arange(width).view(1, 1, width)
        index = torch.minimum(index, (first + lengths.view(rows, 1, 1) - 1).clamp(min=0))
        return cls(tuple(clamped), tuple(lows), tuple(widths), index, lengths)

    @property
    def ragged(self) -> bool:
        """Whether some row (a spare one included) is narrower than the windows' width:
        the vocoder then needs ``lengths``."""
        return bool((self.lengths != self.index.shape[2]).any())

    def cut(self, audio: torch.Tensor, upsample: int) -> list[torch.Tensor]:
        """Each row's samples from its start, of vocoded windows (rows, 1, width * up)."""
        return [
            audio[b, 0, (s - lo) * upsample : w * upsample]
            for b, (s, lo, w) in enumerate(zip(self.starts, self.lows, self.widths, strict=True))
        ]


def is_training_only(name: str) -> bool:
    """Official s2 tensors this inference module does not hold (posterior encoder, VQ EMA state)."""
    return name.startswith(TRAINING_ONLY_PREFIXES) or name.endswith(TRAINING_ONLY_SUFFIXES)
