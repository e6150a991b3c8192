"""Speaker-verification encoder (ERes2NetV2) that gives v2Pro/v2ProPlus their speaker vector.

The module tree mirrors the official ``pretrained_eres2netv2w24s4ep4.ckpt`` (a bare state
dict of 1001 tensors, BatchNorm statistics included) so that it loads with ``strict=True``.

GPT-SoVITS does not use the network's own x-vector head: it takes the fused stage-3/4
feature map, folds channels and frequency together and averages over time, giving a
20480-d vector (2048 channels x 10 frequency rows) that the SoVITS ``sv_emb`` Linear
consumes. ``seg_1`` (the x-vector projection) is kept only so strict loading works.

Input features are Kaldi-compatible log-mel filterbanks, computed here in pure torch
(:func:`kaldi_fbank`) so that no torchaudio is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SVConfigError(ValueError):
    """A state dict or config does not describe an ERes2NetV2 speaker encoder."""


class FbankInputError(ValueError):
    """The waveform given to :func:`kaldi_fbank` cannot be framed."""


@dataclass(frozen=True)
class SVConfig:
    """Hyper-parameters of ERes2NetV2 (defaults: the ``w24s4`` model GPT-SoVITS ships)."""

    feat_dim: int = 80
    m_channels: int = 64
    base_width: int = 24
    scale: int = 4
    expansion: int = 4
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    embedding_size: int = 192
    aff_reduction: int = 4

    def __post_init__(self) -> None:
        if self.feat_dim % 8:
            raise SVConfigError(
                f"feat_dim must be a multiple of 8 (3 stride-2 stages), got {self.feat_dim}"
            )
        if min(self.num_blocks) < 1 or len(self.num_blocks) != 4:
            raise SVConfigError(f"num_blocks must be 4 positive counts, got {self.num_blocks}")
        if self.stage_width(0) < 1:
            raise SVConfigError(
                f"m_channels {self.m_channels} x base_width {self.base_width} / 64 gives a zero-width split"
            )

    def stage_width(self, stage: int) -> int:
        """Width of one Res2Net split in ``stage`` (0..3); planes double per stage."""
        planes = self.m_channels * 2**stage
        return math.floor(planes * self.base_width / 64.0)

    @property
    def out_channels(self) -> int:
        """Channels of the fused stage-3/4 map: ``m_channels * 8 * expansion`` (2048)."""
        return self.m_channels * 8 * self.expansion

    @property
    def embedding_dim(self) -> int:
        """Length of the pooled speaker vector: channels x frequency rows left (20480)."""
        return self.out_channels * (self.feat_dim // 8)

    @classmethod
    def infer(cls, state_dict: Mapping[str, Tensor]) -> SVConfig:
        """Derive the config from tensor shapes, so tiny test models load like the real one."""
        try:
            m_channels = state_dict["conv1.weight"].shape[0]
            expansion = state_dict["layer1.0.conv3.weight"].shape[0] // m_channels
            width0 = state_dict["layer1.0.convs.0.weight"].shape[0]
            scale = state_dict["layer1.0.conv1.weight"].shape[0] // width0
            seg_in = state_dict["seg_1.weight"].shape[1]
            embedding_size = state_dict["seg_1.weight"].shape[0]
            fuse_inter = state_dict["fuse34.local_att.0.weight"].shape[0]
            widths = [state_dict[f"layer{i + 1}.0.convs.0.weight"].shape[0] for i in range(4)]
        except KeyError as err:
            raise SVConfigError(f"not an ERes2NetV2 state dict: missing tensor {err}") from err
        num_blocks = tuple(_count_blocks(state_dict, f"layer{i + 1}.") for i in range(4))
        # Mean and std statistics (2 per feature) of out_channels x feat_dim/8 features.
        feat_dim = seg_in // (2 * m_channels * 8 * expansion) * 8
        base_width = _solve_base_width(m_channels, widths)
        return cls(
            feat_dim=feat_dim,
            m_channels=m_channels,
            base_width=base_width,
            scale=scale,
            expansion=expansion,
            num_blocks=num_blocks,  # type: ignore[arg-type]
            embedding_size=embedding_size,
            aff_reduction=m_channels * 8 * expansion // fuse_inter,
        )


def _count_blocks(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    indices = {int(k[len(prefix) :].split(".", 1)[0]) for k in state_dict if k.startswith(prefix)}
    return len(indices)


def _solve_base_width(m_channels: int, widths: list[int]) -> int:
    """Smallest base width that reproduces every stage's split width (floor makes it ambiguous)."""
    for base_width in range(1, 1025):
        if all(
            math.floor(m_channels * 2**i * base_width / 64.0) == w for i, w in enumerate(widths)
        ):
            return base_width
    raise SVConfigError(
        f"no base_width reproduces split widths {widths} for m_channels {m_channels}"
    )


def _relu20(x: Tensor) -> Tensor:
    """ERes2Net's blocks clip activations to [0, 20] (a Hardtanh), not a plain ReLU."""
    return F.hardtanh(x, 0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion: a learned per-element blend of two same-shaped maps."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        inter = channels // reduction
        # Sequential indices (0, 1, 3, 4) are the official tensor names.
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, kernel_size=1),
            nn.BatchNorm2d(inter),
            nn.SiLU(),
            nn.Conv2d(inter, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        gate = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))  # (B, C, F, T) in (0, 2)
        return x * gate + y * (2.0 - gate)  # (B, C, F, T)


class Block(nn.Module):
    """Bottleneck Res2Net block; splits are chained by addition, or by AFF when ``fuse``."""

    def __init__(self, cfg: SVConfig, stage: int, in_planes: int, stride: int, fuse: bool) -> None:
        super().__init__()
        planes = cfg.m_channels * 2**stage
        width = cfg.stage_width(stage)
        out_planes = planes * cfg.expansion
        self.width = width
        self.conv1 = nn.Conv2d(in_planes, width * cfg.scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * cfg.scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(cfg.scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(cfg.scale))
        self.fuse_models = nn.ModuleList(
            AFF(width, cfg.aff_reduction) for _ in range(cfg.scale - 1 if fuse else 0)
        )
        self.conv3 = nn.Conv2d(width * cfg.scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        hidden = _relu20(self.bn1(self.conv1(x)))  # (B, w*scale, F, T)
        splits = torch.split(hidden, self.width, dim=1)  # scale x (B, w, F, T)
        outs: list[Tensor] = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i == 0:
                sp = splits[0]
            elif len(self.fuse_models):
                sp = self.fuse_models[i - 1](outs[-1], splits[i])
            else:
                sp = outs[-1] + splits[i]
            outs.append(_relu20(bn(conv(sp))))  # (B, w, F, T)
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))  # (B, planes*expansion, F, T)
        return _relu20(out + self.shortcut(x))


def _stage(cfg: SVConfig, stage: int, in_planes: int) -> nn.Sequential:
    """Blocks of one stage; stages after the first halve frequency and time in block 0."""
    blocks = []
    for j in range(cfg.num_blocks[stage]):
        stride = 2 if stage > 0 and j == 0 else 1
        blocks.append(Block(cfg, stage, in_planes, stride, fuse=stage >= 2))
        in_planes = cfg.m_channels * 2**stage * cfg.expansion
    return nn.Sequential(*blocks)


class SpeakerEncoder(nn.Module):
    """ERes2NetV2 trunk; ``forward`` returns GPT-SoVITS's pooled 20480-d speaker vector."""

    def __init__(self, cfg: SVConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or SVConfig()
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.layer1 = _stage(cfg, 0, m)
        self.layer2 = _stage(cfg, 1, m * cfg.expansion)
        self.layer3 = _stage(cfg, 2, m * 2 * cfg.expansion)
        self.layer4 = _stage(cfg, 3, m * 4 * cfg.expansion)
        self.layer3_ds = nn.Conv2d(
            m * 4 * cfg.expansion, cfg.out_channels, 3, stride=2, padding=1, bias=False
        )
        self.fuse34 = AFF(cfg.out_channels, cfg.aff_reduction)
        # Unused at inference (see module docstring); present for strict loading.
        self.seg_1 = nn.Linear(cfg.embedding_dim * 2, cfg.embedding_size)

    def forward(self, feats: Tensor) -> Tensor:
        """``feats`` (B, T, feat_dim) log-mel frames -> (B, embedding_dim) speaker vector."""
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = F.relu(self.bn1(self.conv1(x)))  # (B, m, F, T)
        x2 = self.layer2(self.layer1(x))  # (B, 2m*e, F/2, T/2)
        x3 = self.layer3(x2)  # (B, 4m*e, F/4, T/4)
        x4 = self.layer4(x3)  # (B, 8m*e, F/8, T/8)
        fused = self.fuse34(x4, self.layer3_ds(x3))  # (B, 8m*e, F/8, T/8)
        return fused.flatten(1, 2).mean(-1)  # (B, 8m*e * F/8)

    def embed(self, wav16k: Tensor) -> Tensor:
        """16 kHz waveform (T,) or (B, T) -> (B, embedding_dim); call on an ``eval()`` module."""
        feats = kaldi_fbank(wav16k, num_mel_bins=self.config.feat_dim)  # (B, frames, F)
        if feats.dim() == 2:
            feats = feats.unsqueeze(0)
        return self(feats.to(self.conv1.weight.dtype))


# --- Kaldi-compatible filterbank -------------------------------------------------------

_SAMPLE_RATE = 16000
_FRAME_LENGTH = 400  # 25 ms
_FRAME_SHIFT = 160  # 10 ms
_FFT_SIZE = 512  # frame length rounded up to a power of two
_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0
_POVEY_EXPONENT = 0.85


def _mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


@lru_cache(maxsize=4)
def _mel_banks(num_bins: int) -> Tensor:
    """Kaldi triangular mel filters (num_bins, FFT/2 + 1) in float64; the Nyquist column is zero."""
    nyquist = _SAMPLE_RATE / 2
    lo, hi = (
        _mel(torch.tensor(_LOW_FREQ, dtype=torch.float64)),
        _mel(torch.tensor(nyquist, dtype=torch.float64)),
    )
    delta = (hi - lo) / (num_bins + 1)
    edges = lo + delta * torch.arange(num_bins + 2, dtype=torch.float64)  # (num_bins + 2,)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n, 1) each
    fft_freqs = torch.arange(_FFT_SIZE // 2, dtype=torch.float64) * (_SAMPLE_RATE / _FFT_SIZE)
    mel = _mel(fft_freqs)[None, :]  # (1, FFT/2)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (n, FFT/2)
    return F.pad(banks, (0, 1))  # (n, FFT/2 + 1)


@lru_cache(maxsize=1)
def _povey_window() -> Tensor:
    """Hann window raised to 0.85: like Hann, but reaching exactly zero at both edges."""
    return torch.hann_window(_FRAME_LENGTH, periodic=False, dtype=torch.float64).pow(
        _POVEY_EXPONENT
    )


def kaldi_fbank(wav16k: Tensor, num_mel_bins: int = 80) -> Tensor:
    """Log-mel filterbank matching Kaldi ``compute-fbank-feats`` with dither 0.

    25 ms povey frames every 10 ms (edges snipped), per-frame DC removal, pre-emphasis 0.97,
    512-point power spectrum, mel filters from 20 Hz to Nyquist, natural log floored at
    float32 epsilon, no mean normalisation: exactly what ERes2NetV2 was trained on.
    ``wav16k`` (T,) gives (frames, bins); (B, T) gives (B, frames, bins).
    """
    if wav16k.dim() not in (1, 2):
        raise FbankInputError(
            f"expected a (T,) or (B, T) waveform, got shape {tuple(wav16k.shape)}"
        )
    if wav16k.shape[-1] < _FRAME_LENGTH:
        raise FbankInputError(
            f"waveform has {wav16k.shape[-1]} samples; at least {_FRAME_LENGTH} (25 ms at 16 kHz) needed"
        )
    dtype = wav16k.dtype if wav16k.dtype in (torch.float32, torch.float64) else torch.float32
    frames = wav16k.to(dtype).unfold(-1, _FRAME_LENGTH, _FRAME_SHIFT)  # (..., m, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat((frames[..., :1], frames[..., :-1]), dim=-1)  # x[j-1], x[0] at j=0
    frames = frames - _PREEMPHASIS * previous
    frames = frames * _povey_window().to(frames.device, dtype)  # (..., m, 400)
    spectrum = torch.fft.rfft(frames, n=_FFT_SIZE).abs().pow(2)  # (..., m, 257)
    banks = _mel_banks(num_mel_bins).to(frames.device, dtype)  # (n, 257)
    energies = spectrum @ banks.T  # (..., m, n)
    eps = torch.finfo(torch.float32).eps
    return energies.clamp(min=eps).log()
