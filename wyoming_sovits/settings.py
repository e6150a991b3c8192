"""Typed settings: what the server is (``ServerSettings``) and what one request wants (``SynthesisConfig``).

No torch and no argparse here: ``cli/serve.py`` turns flags into a ``ServerSettings``,
``voices.py`` turns a ``voice.yaml`` section into a ``SynthesisConfig``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "float32", "float16", "bfloat16")
GPT_KERNELS = ("auto", "torch", "triton")

# Text-frontend language modes understood by GPT-SoVITS (``text_lang`` in upstream api_v2).
TEXT_LANGUAGES = (
    "auto",
    "auto_yue",
    "en",
    "zh",
    "ja",
    "yue",
    "ko",
    "all_zh",
    "all_ja",
    "all_yue",
    "all_ko",
)


class SettingsError(ValueError):
    """A setting or synthesis parameter has an invalid value."""


@dataclass(frozen=True)
class SynthesisConfig:
    """Sampling and rendering parameters of one request; ``None`` means "use the voice default".

    ``text_language`` is the frontend language mode (one of ``TEXT_LANGUAGES``) and
    ``fragment_pause`` the seconds of silence the backend puts after each sentence.
    """

    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    speed: float | None = None
    seed: int | None = None
    noise_scale: float | None = None
    fragment_pause: float | None = None
    text_language: str | None = None

    def __post_init__(self) -> None:
        _check_range("top_k", self.top_k, low=1, integer=True)
        _check_range("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        _check_range("temperature", self.temperature, low=0.0, low_open=True)
        _check_range("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        _check_range("speed", self.speed, low=0.25, high=4.0)
        _check_range("seed", self.seed, low=0, integer=True)
        _check_range("noise_scale", self.noise_scale, low=0.0)
        _check_range("fragment_pause", self.fragment_pause, low=0.0, high=10.0)
        if self.text_language is not None and self.text_language not in TEXT_LANGUAGES:
            raise SettingsError(
                f"text_language must be one of {', '.join(TEXT_LANGUAGES)}, "
                f"got {self.text_language!r}"
            )

    def merged(self, over: SynthesisConfig) -> SynthesisConfig:
        """A copy of ``self`` with every field that ``over`` sets (not ``None``) replaced."""
        changes = {f.name: getattr(over, f.name) for f in fields(over)}
        return dataclasses.replace(
            self, **{name: value for name, value in changes.items() if value is not None}
        )

    @property
    def deterministic(self) -> bool:
        """True when a seed is fixed, so the same text gives the same audio."""
        return self.seed is not None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SynthesisConfig:
        """Build from a plain mapping (a ``voice.yaml`` section); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"unknown synthesis option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))


def _check_range(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise SettingsError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"> {low}" if low_open else f">= {low}"
        raise SettingsError(f"{name} must be {bound}, got {value!r}")
    if high is not None and value > high:
        raise SettingsError(f"{name} must be <= {high}, got {value!r}")


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs to know at start-up (one immutable object, injected)."""

    uri: str = "tcp://0.0.0.0:10200"
    data_dirs: tuple[Path, ...] = ()
    voices_dir: Path = Path("voices")
    default_voice: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    model_version: str = "v2ProPlus"  # which official weight set under <data-dir>/models
    download: bool = False  # fetch missing weights at start-up
    streaming: bool = True
    samples_per_chunk: int = 1024
    # 0 disables the limit.
    max_text_chars: int = 4000
    zeroconf: bool = False
    zeroconf_name: str | None = None
    # Prepared voice prompts kept in memory (the default voice is never evicted).
    prompt_cache_size: int = 8
    # Synthesised phrases kept in memory; 0 disables the phrase cache.
    phrase_cache_size: int = 64
    # Cache phrases even without a fixed seed (the same text then always sounds the same).
    phrase_cache_nondeterministic: bool = False
    warm_up: bool = True
    # "triton": the fused decode step (wyoming_sovits.kernels); "auto": Triton on CUDA
    gpt_kernels: str = "auto"
    # Sentences decoded together on the GPU (continuous batching of the GPT step); 1: off.
    max_streams: int = 1
    # CUDA: the SoVITS graphs capture the decode compiled by TorchInductor (slow first start).
    sovits_compile: bool = False
    program_name: str = "GPT-SoVITS"
    # Server-wide overrides on top of each voice's defaults.
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise SettingsError(f"max_streams must be >= 1, got {self.max_streams}")
        if self.gpt_kernels not in GPT_KERNELS:
            raise SettingsError(
                f"gpt_kernels must be one of {', '.join(GPT_KERNELS)}, got {self.gpt_kernels!r}"
            )
        if self.device not in DEVICES:
            raise SettingsError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype not in DTYPES:
            raise SettingsError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.samples_per_chunk < 1:
            raise SettingsError(f"samples_per_chunk must be >= 1, got {self.samples_per_chunk}")
        for name in ("max_text_chars", "phrase_cache_size"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.prompt_cache_size < 1:
            raise SettingsError(f"prompt_cache_size must be >= 1, got {self.prompt_cache_size}")
