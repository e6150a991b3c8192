"""MFCC + dynamic time warping distance between two recordings (the quality-regression
metric of wyoming-piper's ``tests/dtw.py``, written here in numpy).

``mfcc_dtw(a, b)`` is the mean Euclidean distance between aligned MFCC frames along the
cheapest monotonic alignment: 0 for the same audio, small for the same speech with small
timing or level changes, large for different content.
"""

from __future__ import annotations

import numpy as np


def mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the mel scale."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, float(to_mel(np.array(rate / 2))), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)
    bank = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        low, mid, high = edges[i : i + 3]
        bank[i] = np.clip(
            np.minimum((bins - low) / (mid - low), (high - bins) / (high - mid)), 0, None
        )
    return bank


def mfcc(
    audio: np.ndarray, rate: int, n_fft: int = 1024, hop_ms: float = 10.0, n_mels: int = 40,
    n_coeffs: int = 13,
) -> np.ndarray:  # fmt: skip
    """(frames, n_coeffs) MFCCs: Hann-windowed power spectra, mel filters, log (floored 80 dB
    under the loudest band), DCT-II."""
    audio = np.asarray(audio, dtype=np.float64)
    hop = int(rate * hop_ms / 1000)
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = 1 + (len(audio) - n_fft) // hop
    index = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(audio[index] * np.hanning(n_fft), axis=1)) ** 2
    mel = power @ mel_filterbank(rate, n_fft, n_mels).T
    log_mel = np.log(np.maximum(mel, 1e-8 * max(float(mel.max()), 1e-20)))
    k = np.arange(n_coeffs)[:, None]
    dct = np.cos(np.pi / n_mels * (np.arange(n_mels)[None] + 0.5) * k)
    return np.asarray(log_mel @ dct.T)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cost of the cheapest monotonic alignment of frame sequences ``a`` and ``b``
    (Euclidean frame distance, steps right, down or diagonal), per frame of both."""
    cost = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    total = np.full((len(a) + 1, len(b) + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, len(a) + 1):  # row by row: each cell from the row above and its left
        above = total[i - 1]
        best = np.minimum(above[1:], above[:-1]) + cost[i - 1]
        row = total[i]
        for j in range(1, len(b) + 1):
            row[j] = min(best[j - 1], row[j - 1] + cost[i - 1, j - 1])
    return float(total[-1, -1] / (len(a) + len(b)))


def mfcc_dtw(a: np.ndarray, b: np.ndarray, rate: int) -> float:
    return dtw_distance(mfcc(a, rate), mfcc(b, rate))
