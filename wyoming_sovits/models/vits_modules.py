"""Building blocks of the SoVITS decoder (see ``vits.py``).

Attribute names mirror the official state-dict names (``enc_p.encoder_ssl.attn_layers.0.conv_q``,
``ref_enc.spectral.0.fc`` ...), so the released weights load without renaming. Weight-norm
pairs are folded into plain ``weight`` tensors before loading; nothing here is trained.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

_LOGGER = logging.getLogger(__name__)

# Slope between generator stages; the final activation uses torch's default 0.01 instead.
LRELU_SLOPE = 0.1
# Additive score for masked positions in the text-encoder attention (the weights saw -1e4).
_MASKED_SCORE = -1e4


def sequence_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, 1, T) float mask, 1 on valid frames."""
    steps = torch.arange(max_length, device=lengths.device)  # (T,)
    return (steps[None, :] < lengths[:, None]).unsqueeze(1).float()  # (B, 1, T)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, T); parameters are named gamma/beta."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.transpose(1, 2), self.gamma.shape, self.gamma, self.beta, self.eps)
        return y.transpose(1, 2)  # (B, C, T)


class MultiHeadAttention(nn.Module):
    """Multi-head attention on (B, C, T) with 1x1 conv projections.

    With ``window_size`` it adds learned relative-position terms (shared by all heads) to the
    keys and values for offsets within +-window; offsets outside the window contribute nothing.
    """

    def __init__(self, channels: int, n_heads: int, window_size: int | None = None) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"channels {channels} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        if window_size is not None:
            span, scale = 2 * window_size + 1, self.head_dim**-0.5
            self.emb_rel_k = nn.Parameter(torch.randn(1, span, self.head_dim) * scale)
            self.emb_rel_v = nn.Parameter(torch.randn(1, span, self.head_dim) * scale)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # (B, H, T, Dh)

    def _relative_index(
        self, length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, T) index into the relative tables for offset key-query, and its in-window mask."""
        assert self.window_size is not None
        pos = torch.arange(length, device=device)
        offset = pos[None, :] - pos[:, None]  # (Tq, Tk)
        inside = offset.abs() <= self.window_size  # (Tq, Tk)
        index = (offset + self.window_size).clamp(0, 2 * self.window_size)  # (Tq, Tk)
        return index, inside

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, Tq) attends to c (B, C, Tk); mask (B, 1, Tq, Tk), 0 = blocked."""
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)  # (B, H, Tq, Dh)
        k = self._heads(self.conv_k(c))  # (B, H, Tk, Dh)
        v = self._heads(self.conv_v(c))  # (B, H, Tk, Dh)
        scores = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk)
        if self.window_size is not None:
            index, inside = self._relative_index(scores.shape[-1], scores.device)
            rel = q @ self.emb_rel_k.transpose(-2, -1)  # (B, H, Tq, 2W+1)
            scores = scores + rel.gather(-1, index.expand_as(scores)) * inside
        p = torch.softmax(scores.masked_fill(mask == 0, _MASKED_SCORE), dim=-1)  # (B, H, Tq, Tk)
        out = p @ v  # (B, H, Tq, Dh)
        if self.window_size is not None:
            band = torch.zeros(
                *p.shape[:-1], self.emb_rel_v.shape[1], dtype=p.dtype, device=p.device
            )
            band.scatter_add_(-1, index.expand_as(p), p * inside)  # (B, H, Tq, 2W+1)
            out = out + band @ self.emb_rel_v  # (B, H, Tq, Dh)
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))  # (B, C, Tq)


class FFN(nn.Module):
    """Two 'same'-padded convolutions with ReLU, masked before each conv."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x * mask, self.pad)))  # (B, F, T)
        return self.conv_2(F.pad(x * mask, self.pad)) * mask  # (B, C, T)


class AttentionEncoder(nn.Module):
    """Post-norm transformer encoder with relative attention (window 4) and conv FFN."""

    def __init__(
        self,
        channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        window_size: int = 4,
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(channels, n_heads, window_size) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FFN(channels, filter_channels, kernel_size) for _ in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, T), mask (B, 1, T) -> (B, C, T)."""
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)  # (B, 1, T, T)
        x = x * mask
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2, strict=True
        ):
            x = norm1(x + attn(x, x, attn_mask))
            x = norm2(x + ffn(x, mask))
        return x * mask


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content frames attend to text, plus the global voice."""

    def __init__(self, content_channels: int, hidden: int, n_heads: int) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, content_channels, 1)

    def forward(
        self,
        ssl: torch.Tensor,
        ssl_mask: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        ge: torch.Tensor,
    ) -> torch.Tensor:
        """ssl (B, C, Ts), text (B, C, Tt), ge (B, hidden, 1) -> (B, C, Ts)."""
        attn_mask = text_mask.unsqueeze(2) * ssl_mask.unsqueeze(-1)  # (B, 1, Ts, Tt)
        s = self.c_pre(ssl * ssl_mask)  # (B, hidden, Ts)
        t = self.text_pre(text * text_mask)  # (B, hidden, Tt)
        x = self.cross_attention(s * ssl_mask, t * text_mask, attn_mask) + s + ge
        return self.c_post(x * ssl_mask)  # (B, C, Ts)


class _Linear(nn.Module):
    """A Linear stored under ``.fc`` (the official ``LinearNorm`` naming)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _Conv(nn.Module):
    """A 'same'-padded Conv1d stored under ``.conv`` (the official ``ConvNorm`` naming)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_in, n_out, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _GLUBlock(nn.Module):
    """Residual conv + gated linear unit over (B, C, T)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv1 = _Conv(channels, 2 * channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.conv1(x).chunk(2, dim=1)  # (B, C, T) each
        return x + a * torch.sigmoid(gate)


class _StyleAttention(nn.Module):
    """Style-encoder self-attention; scores scale by sqrt(model width), not head width."""

    def __init__(self, channels: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.temperature = math.sqrt(channels)
        self.w_qs = nn.Linear(channels, channels)
        self.w_ks = nn.Linear(channels, channels)
        self.w_vs = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), pad (B, T) True on padding -> (B, T, C), with residual."""
        b, t, c = x.shape
        q, k, v = (
            w(x).view(b, t, self.n_heads, -1).transpose(1, 2)
            for w in (self.w_qs, self.w_ks, self.w_vs)
        )
        scores = (q @ k.transpose(-2, -1)) / self.temperature  # (B, H, T, T)
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # (B, H, T, Dh)
        return self.fc(out.transpose(1, 2).reshape(b, t, c)) + x


class StyleEncoder(nn.Module):
    """Reference spectrogram -> one global voice vector (masked mean over time).

    ``spectral`` keeps the official Sequential layout (Linear, Mish, dropout slot) x2, so its
    Linear layers sit at indices 0 and 3; the dropout slots are identities at inference.
    """

    def __init__(
        self, n_bins: int, out_dim: int, hidden: int = 128, kernel_size: int = 5, n_heads: int = 2
    ) -> None:
        super().__init__()
        self.spectral = nn.Sequential(
            _Linear(n_bins, hidden),
            nn.Mish(),
            nn.Identity(),
            _Linear(hidden, hidden),
            nn.Mish(),
            nn.Identity(),
        )
        self.temporal = nn.Sequential(
            _GLUBlock(hidden, kernel_size), _GLUBlock(hidden, kernel_size)
        )
        self.slf_attn = _StyleAttention(hidden, n_heads)
        self.fc = _Linear(hidden, out_dim)

    def forward(self, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """spec (B, bins, T), mask (B, 1, T) -> (B, out_dim, 1)."""
        pad = mask[:, 0] == 0  # (B, T)
        x = self.spectral(spec.transpose(1, 2))  # (B, T, hidden)
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)  # (B, T, hidden)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        x = self.fc(self.slf_attn(x, pad))  # (B, T, out)
        # The mean runs in float32: half precision overflows on long references.
        n = (~pad).sum(dim=1).float()  # (B,)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0).float()
        mean = (x / n[:, None, None]).sum(dim=1).to(spec.dtype)  # (B, out)
        return mean.unsqueeze(-1)  # (B, out, 1)


def _gated(x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """WaveNet gate: tanh(first half) * sigmoid(second half) of x + cond."""
    a, b = (x + cond).chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class WN(nn.Module):
    """Non-causal WaveNet stack with global conditioning, as used inside the coupling layers."""

    def __init__(
        self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.cond_layer = nn.Conv1d(gin, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            pad = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                nn.Conv1d(hidden, 2 * hidden, kernel_size, dilation=dilation, padding=pad)
            )
            # The last layer only feeds the skip sum, so it has half the outputs.
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip_layers.append(nn.Conv1d(hidden, out, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x (B, H, T), mask (B, 1, T), g (B, gin, 1) -> (B, H, T)."""
        skip = torch.zeros_like(x)
        cond = self.cond_layer(g).split(2 * self.hidden, dim=1)  # n_layers x (B, 2H, 1)
        last = len(self.in_layers) - 1
        for i, (conv_in, conv_rs) in enumerate(
            zip(self.in_layers, self.res_skip_layers, strict=True)
        ):
            acts = conv_rs(_gated(conv_in(x), cond[i]))  # (B, 2H or H, T)
            if i < last:
                x = (x + acts[:, : self.hidden]) * mask
                skip = skip + acts[:, self.hidden :]
            else:
                skip = skip + acts
        return skip * mask


class CouplingLayer(nn.Module):
    """Mean-only affine coupling: the second half is shifted by a function of the first."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin: int,
    ) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden, 1)
        self.enc = WN(hidden, kernel_size, dilation_rate, n_layers, gin)
        self.post = nn.Conv1d(hidden, self.half_channels, 1)

    def reverse(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = x.split(self.half_channels, dim=1)  # (B, C/2, T) each
        shift = self.post(self.enc(self.pre(x0) * mask, mask, g)) * mask  # (B, C/2, T)
        return torch.cat([x0, (x1 - shift) * mask], dim=1)  # (B, C, T)


class _Flip(nn.Module):
    """Placeholder at the odd indices of ``flow.flows``: the channel flip has no weights."""


class Flow(nn.Module):
    """Coupling layers interleaved with channel flips; only the inverse is needed to synthesise."""

    def __init__(
        self, channels: int, hidden: int, kernel_size: int, n_layers: int, n_flows: int, gin: int
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(CouplingLayer(channels, hidden, kernel_size, 1, n_layers, gin))
            self.flows.append(_Flip())

    def reverse(self, z: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """z_p (B, C, T) -> z (B, C, T)."""
        for layer in reversed(self.flows):
            z = layer.reverse(z, mask, g) if isinstance(layer, CouplingLayer) else z.flip(1)
        return z


class ResBlock(nn.Module):
    """HiFi-GAN resblock type 1: three (dilated conv, conv) residual pairs."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(
                channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2
            )
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
            for _ in dilations
        )

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, T); ``keep`` (B, 1, T) zeroes every convolution's input past each
        row's real length (see ``Generator.forward``)."""
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            y = c1(_zero_padding(F.leaky_relu(x, LRELU_SLOPE), keep))
            x = x + c2(_zero_padding(F.leaky_relu(y, LRELU_SLOPE), keep))
        return x


def _zero_padding(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x if keep is None else x * keep


def _keep_mask(lengths: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) real lengths at ``like``'s rate -> (B, 1, T) of ones then zeros (B, 1, 1, T for a
    4-D ``like``), ``like``'s dtype."""
    positions = torch.arange(like.shape[-1], device=like.device)
    keep = (positions < lengths[:, None]).to(like.dtype)  # (B, T)
    return keep.view(keep.shape[0], *([1] * (like.ndim - 2)), keep.shape[1])


def _stage_average(
    blocks: Sequence[nn.Module] | nn.ModuleList, x: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """The average of an upsampling stage's parallel residual blocks (one per kernel size)."""
    total = blocks[0](x, keep)
    for block in blocks[1:]:
        total = total + block(x, keep)
    return total / len(blocks)


def _fused_stage_fails(
    stage: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    blocks: Sequence[nn.Module],
    channels: int,
    like: torch.Tensor,
) -> str | None:
    """Why a fused stage (``Generator.use_fused_resblocks``) cannot serve: an error, or
    activations unlike the plain blocks' on two rows of 96 positions (one cut short by its
    length); None when it can. ``like`` gives the device and dtype."""
    gen = torch.Generator(device=like.device).manual_seed(0)
    x = 0.5 * torch.randn(2, channels, 1, 96, device=like.device, generator=gen)
    x = x.to(like.dtype).contiguous(memory_format=torch.channels_last)
    lengths = torch.tensor([96, 60], device=like.device, dtype=torch.int32)
    try:
        with torch.no_grad():
            for lens in (lengths, None):
                keep = None if lens is None else _keep_mask(lens, x)
                want = _stage_average(blocks, x, keep).float()
                got = stage(x, lens).float()
                err = float((got - want).norm() / want.norm())
                if not err < 2e-2:
                    return f"its output differs from cuDNN's by {err:.1e}"
    except Exception as exc:  # any failure to build or launch leaves the stage to cuDNN
        return f"{type(exc).__name__}: {exc}"
    return None


def _as_2d(conv: nn.Module) -> nn.Module:
    """A 1-D convolution (plain or transposed) as the 2-D one over (B, C, 1, T) with the
    same weights, in channels-last memory (what cuDNN's half-precision kernels read)."""
    if isinstance(conv, nn.ConvTranspose1d):
        two_d: nn.Module = nn.ConvTranspose2d(
            conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), (1, conv.stride[0]),
            padding=(0, int(conv.padding[0])), bias=conv.bias is not None,
        )  # fmt: skip
    else:
        assert isinstance(conv, nn.Conv1d)
        two_d = nn.Conv2d(
            conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), (1, conv.stride[0]),
            padding=(0, int(conv.padding[0])), dilation=(1, conv.dilation[0]),
            bias=conv.bias is not None,
        )  # fmt: skip
    weight = conv.weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)
    two_d.weight = nn.Parameter(weight, requires_grad=False)
    if conv.bias is not None:
        two_d.bias = nn.Parameter(conv.bias.detach(), requires_grad=False)
    return two_d


class Generator(nn.Module):
    """HiFi-GAN-style vocoder: latent frames (B, C, T) -> waveform (B, 1, T * prod(rates))."""

    def __init__(
        self,
        in_channels: int,
        resblock_kernel_sizes: Sequence[int],
        resblock_dilation_sizes: Sequence[Sequence[int]],
        upsample_rates: Sequence[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: Sequence[int],
        gin: int,
    ) -> None:
        super().__init__()
        ch = upsample_initial_channel
        self.conv_pre = nn.Conv1d(in_channels, ch, 7, padding=3)
        self.cond = nn.Conv1d(gin, ch, 1)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.ups.append(
                nn.ConvTranspose1d(ch, ch // 2, kernel, rate, padding=(kernel - rate) // 2)
            )
            ch //= 2
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3, bias=False)
        self.n_kernels = len(resblock_kernel_sizes)
        self.upsample_rates = tuple(upsample_rates)
        self.channels_last = False  # this module's own convolutions are 2-D, channels last
        self._twin: list[Generator] = []  # use_channels_last's copy for batches (unregistered)
        self._twin_rows = 2
        # use_fused_resblocks' kernels per stage (None: that stage through cuDNN)
        self._fused: list[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None] = []

    def use_channels_last(self, min_rows: int = 2) -> None:
        """Vocode batches of at least ``min_rows`` rows with a twin of this vocoder whose
        convolutions are 2-D over (B, C, 1, T) in channels-last memory: the same function
        and weights, for GPUs, where cuDNN's half-precision kernels read channels last and
        1-D inputs of many rows are transposed around every convolution (1.4x faster at 16
        and 64 rows on an H200; one row is faster as it is, 0.3x otherwise). Call it after
        loading and moving the weights: the twin is a copy (not in the state dict)."""
        twin = copy.deepcopy(self)
        twin._twin = []
        for module in [twin, *twin.resblocks]:
            for name, child in list(module.named_children()):
                if isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)):
                    setattr(module, name, _as_2d(child))
                elif isinstance(child, nn.ModuleList):
                    for i, conv in enumerate(child):
                        if isinstance(conv, (nn.Conv1d, nn.ConvTranspose1d)):
                            child[i] = _as_2d(conv)
        twin.channels_last = True
        self._twin, self._twin_rows = [twin], min_rows

    def use_fused_resblocks(
        self, configs: dict[int, Any] | None = None, check: bool = True
    ) -> None:
        """Run the channels-last twin's residual blocks through the Triton kernels of
        ``vocoder_kernels`` (one launch per convolution, leaky ReLU, mask, residual and the
        stage's average fused in). Call it after ``use_channels_last``. ``configs`` maps a
        stage's channel count to its ``vocoder_kernels.ConvConfig``; stages whose channel
        count it lacks keep cuDNN's convolutions (default: ``DEFAULT_CONFIGS``).

        ``check``: each fused stage first runs on a small input against cuDNN's, with and
        without lengths (which also compiles its kernels now, not inside a later CUDA graph
        capture); a stage that fails (Triton cannot build or launch it on this GPU) or
        differs keeps cuDNN, with a warning."""
        from ..vocoder_kernels import DEFAULT_CONFIGS, FusedResBlocks

        if not self._twin:
            raise RuntimeError("use_fused_resblocks needs use_channels_last first")
        twin, n = self._twin[0], self.n_kernels
        configs = DEFAULT_CONFIGS if configs is None else configs
        fused: list[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None] = []
        for i in range(len(twin.ups)):
            blocks = list(twin.resblocks[i * n : (i + 1) * n])
            channels = cast(nn.Conv2d, cast(ResBlock, blocks[0]).convs1[0]).in_channels
            config = configs.get(channels)
            stage = None if config is None else FusedResBlocks(blocks, LRELU_SLOPE, config)
            if stage is not None and check:
                like = cast(torch.Tensor, twin.conv_pre.weight)
                reason = _fused_stage_fails(stage, blocks, channels, like)
                if reason is not None:
                    _LOGGER.warning(
                        "Vocoder stage %d (%d channels) keeps cuDNN's convolutions: %s",
                        i, channels, reason,
                    )  # fmt: skip
                    stage = None
            fused.append(stage)
        twin._fused = fused if any(f is not None for f in fused) else []

    def use_plain_resblocks(self) -> None:
        """Undo ``use_fused_resblocks``."""
        if self._twin:
            self._twin[0]._fused = []

    @property
    def fused_resblocks(self) -> bool:
        return bool(self._twin and self._twin[0]._fused)

    def forward(
        self, x: torch.Tensor, g: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, C, T), g (B, gin, 1) -> audio (B, 1, T * prod(rates)) in [-1, 1].

        ``lengths`` (B,): each row's real frames, when rows are zero-padded to T. The
        convolutions have no mask of their own: on padded frames they would see the
        activations of the padding instead of the zeros an exact-length input ends in, and
        the last ~100 ms would change. With the lengths every convolution's input is zeroed
        past them (one mask per rate), and each row is its exact-length decode.
        """
        if self._twin and x.shape[0] >= self._twin_rows:
            return self._twin[0](x, g, lengths)
        if self.channels_last:  # (B, C, 1, T), channels last (use_channels_last)
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            g = g.unsqueeze(2)
        keep = None if lengths is None else _keep_mask(lengths, x)
        x = self.conv_pre(_zero_padding(x, keep)) + self.cond(g)  # (B, U, T)
        rate = 1
        for i, up in enumerate(self.ups):
            # (B, U / 2^(i+1), T * rates[:i+1])
            x = up(_zero_padding(F.leaky_relu(x, LRELU_SLOPE), keep))
            rate *= self.upsample_rates[i]
            keep = None if lengths is None else _keep_mask(lengths * rate, x)
            stage = self._fused[i] if self._fused else None
            if stage is not None:
                x = stage(x, None if lengths is None else (lengths * rate).int())
                continue
            x = _stage_average(
                self.resblocks[i * self.n_kernels : (i + 1) * self.n_kernels], x, keep
            )
        # The trained weights expect torch's default slope (0.01) here, not LRELU_SLOPE.
        audio = torch.tanh(self.conv_post(_zero_padding(F.leaky_relu(x), keep)))
        return audio.squeeze(2) if self.channels_last else audio  # (B, 1, T_audio)
