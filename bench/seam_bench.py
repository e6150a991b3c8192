"""Chunk seams of streamed audio: the pipeline's chunked decode vs one whole decode.

Streaming re-decodes the growing token prefix at each chunk boundary and sends all but
the last ``STREAM_HOLD_TOKENS`` tokens' audio (``Pipeline._stream_sentence``). This replays
that schedule on the same tokens and noise with the full-size v2ProPlus SoVITS (the weight
contract's ``fill()``), and reports, for each hold, the SNR of the streamed audio against
the whole decode away from the seams (±20 ms excluded) and near them, and the largest
sample jump at a seam next to the largest jump elsewhere (a click shows as a seam jump far
above the rest). Each hold runs twice: vocoding each decode's whole prefix, and vocoding
only from the first unsent frame (``from_frame``, what the eager path does), with the
seconds all its decodes took. Runs on CPU or GPU::

    python3 bench/seam_bench.py            # BENCH_DEVICE=cuda for the GPU
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from contract import filled_state_dict, fold_weight_norm, manifest  # noqa: E402

from wyoming_sovits.models.vits import SoVITS, VitsConfig, is_training_only  # noqa: E402
from wyoming_sovits.pipeline import (  # noqa: E402
    NoiseTape,
    decode_latents,
    next_decode_at,
)

TOKENS, PHONES = 150, 60  # a 6 s sentence
GUARD = 640  # 20 ms at 32 kHz either side of a seam


def sovits(device: torch.device) -> SoVITS:
    version = "v2ProPlus"
    model = SoVITS(VitsConfig.from_hparams(manifest(f"s2_{version}")["config"], version)).eval()
    sd = fold_weight_norm(filled_state_dict(f"s2_{version}"))
    model.load_state_dict({k: v for k, v in sd.items() if not is_training_only(k)}, strict=True)
    return model.to(device)


def decode(
    model: SoVITS, tokens: torch.Tensor, phones: torch.Tensor, ge: torch.Tensor, start: int = 0
) -> np.ndarray:
    """The audio of latent frames ``start`` on."""
    noise = NoiseTape(model.cfg.inter_channels, torch.Generator().manual_seed(7), tokens.device)
    return decode_latents(model, tokens, phones, ge, 1.0, 0.5, noise, start)[2]


def streamed(
    model: SoVITS,
    tokens: torch.Tensor,
    phones: torch.Tensor,
    ge: torch.Tensor,
    hold: int,
    windowed: bool,
) -> tuple[np.ndarray, list[int], float]:
    """The pipeline's schedule: decode prefixes, send up to (n - hold) tokens' audio;
    the audio, the seams and the seconds of decoding."""
    up = model.cfg.upsample_factor
    per_token = up * model.cfg.frames_per_token
    out: list[np.ndarray] = []
    seams: list[int] = []
    sent, n, took = 0, next_decode_at(0), 0.0
    while True:
        start = sent // up if windowed else 0
        t0 = time.perf_counter()
        audio = decode(model, tokens[:n], phones, ge, start)
        took += time.perf_counter() - t0
        if n >= len(tokens):
            out.append(audio[sent - start * up :])
            return np.concatenate(out), seams, took
        ready = (n - hold) * per_token
        if ready > sent:
            out.append(audio[sent - start * up : ready - start * up])
            sent = ready
            seams.append(sent)
        n = min(next_decode_at(n), len(tokens))


def snr(ref: np.ndarray, got: np.ndarray) -> float:
    err = float(np.sum((ref - got) ** 2))
    return 10 * math.log10(float(np.sum(ref**2)) / max(err, 1e-20))


def main() -> None:
    device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
    torch.manual_seed(0)
    model = sovits(device)
    tokens = torch.randint(0, 1024, (TOKENS,), device=device)
    phones = torch.randint(1, 732, (PHONES,), device=device)
    with torch.no_grad():
        spec = torch.rand(1, 1025, 200, device=device)
        ge = model.encode_reference(spec, torch.randn(1, 20480, device=device))
    t0 = time.perf_counter()
    whole = decode(model, tokens, phones, ge)
    print(f"one whole decode of {TOKENS} tokens: {time.perf_counter() - t0:.2f} s")
    print(
        "| hold (tokens) | vocoded | SNR away from seams | SNR within ±20 ms "
        "| max jump at seams | max jump elsewhere | decodes took |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for hold, windowed in [(h, w) for h in (0, 2, 4, 8) for w in (False, True)]:
        got, seams, took = streamed(model, tokens, phones, ge, hold, windowed)
        near = np.zeros(len(whole), dtype=bool)
        for s in seams:
            near[max(0, s - GUARD) : s + GUARD] = True
        jumps = np.abs(np.diff(got))
        at_seam = max(float(jumps[s - 1]) for s in seams)
        elsewhere = np.delete(jumps, [s - 1 for s in seams]).max()
        print(f"| {hold} | {'unsent frames' if windowed else 'whole prefix'} "
              f"| {snr(whole[~near], got[~near]):.1f} dB | {snr(whole[near], got[near]):.1f} dB "
              f"| {at_seam:.4f} | {elsewhere:.4f} | {took:.2f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
