"""HuBERT content encoder (chinese-hubert-base) that turns a reference clip into 50 Hz features.

GPT-SoVITS feeds the model the raw 16 kHz waveform (its ``Wav2Vec2FeatureExtractor`` is
never applied, so there is no mean/variance normalisation) with 0.6 s of zeros appended,
and uses ``last_hidden_state``. The SoVITS quantizer turns the result into the prompt's
semantic tokens, so both details change which tokens a voice gets.

Weights are read from a local folder only (``config.json`` + ``pytorch_model.bin`` or
``model.safetensors``); nothing is ever fetched from the Hub here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

# The reference appends int(32000 * 0.3) zeros to the 16 kHz prompt waveform (0.6 s).
PROMPT_PAD_SAMPLES = 9600
HUBERT_RECEPTIVE_FIELD = 400  # samples under the first output frame
HUBERT_HOP = 320  # 20 ms at 16 kHz


class SSLModelError(RuntimeError):
    """The HuBERT folder is missing, incomplete, or holds another kind of model."""


class SSLInputError(ValueError):
    """The waveform given to the HuBERT encoder has the wrong shape or is too short."""


def hubert_frames(num_samples: int) -> int:
    """Frames HuBERT's conv stack gives for ``num_samples`` input samples."""
    return max(0, (num_samples - HUBERT_RECEPTIVE_FIELD) // HUBERT_HOP + 1)


def _require_model_folder(folder: Path, what: str) -> None:
    if not (folder / "config.json").is_file():
        raise SSLModelError(
            f"{what} folder {folder} has no config.json; point it at a local model folder"
        )


class HubertEncoder:
    """Callable wrapper: 16 kHz waveform -> (B, 768, T50) content features."""

    def __init__(self, model: nn.Module, pad_samples: int = PROMPT_PAD_SAMPLES) -> None:
        self.model = model.eval()
        self.pad_samples = pad_samples

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> HubertEncoder:
        """Load ``HubertModel`` from a local folder, then move it to ``device``/``dtype``."""
        from transformers import HubertModel  # heavy import, only when a model is loaded

        folder = Path(folder)
        _require_model_folder(folder, "HuBERT")
        try:
            model = HubertModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise SSLModelError(
                f"cannot load HuBERT from {folder}: {err}; expected config.json and "
                "pytorch_model.bin (or model.safetensors) of chinese-hubert-base"
            ) from err
        if model.config.model_type != "hubert":
            raise SSLModelError(f"{folder} holds a {model.config.model_type!r} model, not HuBERT")
        return cls(model.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def __call__(self, wav16k: Tensor) -> Tensor:
        """``wav16k`` (T,) or (B, T) raw samples -> (B, hidden, frames), zeros appended first."""
        if wav16k.dim() == 1:
            wav16k = wav16k.unsqueeze(0)  # (1, T)
        if wav16k.dim() != 2:
            raise SSLInputError(
                f"expected a (T,) or (B, T) waveform, got shape {tuple(wav16k.shape)}"
            )
        x = wav16k.to(device=self.device, dtype=self.dtype)
        x = torch.nn.functional.pad(x, (0, self.pad_samples))  # (B, T + pad)
        if x.shape[-1] < HUBERT_RECEPTIVE_FIELD:
            raise SSLInputError(
                f"waveform of {x.shape[-1]} samples is shorter than one HuBERT frame"
            )
        hidden = self.model(x).last_hidden_state  # (B, frames, hidden)
        return hidden.transpose(1, 2)  # (B, hidden, frames)
