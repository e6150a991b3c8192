"""Per-phone BERT features for Chinese text (chinese-roberta-wwm-ext-large).

GPT-SoVITS conditions its GPT on the output of transformer layer 22 of 24
(``hidden_states[-3]``) for each character, repeated once per phone of that character.
Layers above the one used never influence the result, so they are dropped at load time
together with the masked-LM head: the same numbers for less work.

The tokenizer must give exactly one token per character (true for normalised Chinese
text); anything else would silently misalign features and phones, so it is an error.
Weights and ``tokenizer.json`` are read from a local folder only, never from the Hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# hidden_states[-3]: the output of the third-to-last transformer layer.
LAYERS_DROPPED_FROM_TOP = 2


class BertModelError(RuntimeError):
    """The BERT folder is missing, incomplete, or holds another kind of model."""


class BertAlignmentError(ValueError):
    """Text, phone counts and tokens do not line up one-to-one per character."""


class BertFeatures:
    """Callable wrapper: (normalised text, phones per char) -> (hidden, n_phones) features."""

    def __init__(self, tokenizer: Any, encoder: nn.Module) -> None:
        """Take ownership of ``encoder`` (a ``BertModel``) and drop its unused top layers."""
        stack = getattr(encoder, "encoder", None)
        layers = getattr(stack, "layer", None)
        if stack is None or not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "config"):
            raise BertModelError(
                f"expected a BertModel with encoder.layer, got {type(encoder).__name__}"
            )
        if len(layers) <= LAYERS_DROPPED_FROM_TOP:
            raise BertModelError(
                f"BERT has {len(layers)} layers; at least {LAYERS_DROPPED_FROM_TOP + 1} are needed"
            )
        stack.layer = nn.ModuleList(list(layers)[:-LAYERS_DROPPED_FROM_TOP])
        self.tokenizer = tokenizer
        self.encoder = encoder.eval()
        config: Any = getattr(encoder, "config", None)
        self.hidden_size = int(config.hidden_size)
        self.max_chars = int(config.max_position_embeddings) - 2  # room for [CLS] and [SEP]

    @classmethod
    def load(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> BertFeatures:
        """Load tokenizer and masked-LM checkpoint from a local folder; keep only the encoder."""
        from transformers import AutoModelForMaskedLM, AutoTokenizer  # heavy, load time only

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise BertModelError(
                f"BERT folder {folder} has no config.json; point it at a local model folder"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise BertModelError(
                f"cannot load BERT from {folder}: {err}; expected config.json, tokenizer.json and "
                "pytorch_model.bin (or model.safetensors) of chinese-roberta-wwm-ext-large"
            ) from err
        encoder = getattr(model, "bert", None)
        if encoder is None:
            raise BertModelError(f"{folder} holds a {model.config.model_type!r} model, not BERT")
        return cls(tokenizer, encoder.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def __call__(self, norm_text: str, word2ph: Sequence[int]) -> Tensor:
        """Features (hidden, sum(word2ph)) on the model's device and dtype."""
        if len(word2ph) != len(norm_text):
            raise BertAlignmentError(
                f"word2ph has {len(word2ph)} entries but the text has {len(norm_text)} characters: {norm_text!r}"
            )
        if any(n < 0 for n in word2ph):
            raise BertAlignmentError(f"phone counts must be non-negative, got {list(word2ph)}")
        if len(norm_text) > self.max_chars:
            raise BertAlignmentError(
                f"text of {len(norm_text)} characters exceeds BERT's {self.max_chars}; split it first"
            )
        enc = self.tokenizer(norm_text, return_tensors="pt")
        n_tokens = enc["input_ids"].shape[1] - 2  # without [CLS] and [SEP]
        if n_tokens != len(norm_text):
            raise BertAlignmentError(
                f"tokenizer gave {n_tokens} tokens for {len(norm_text)} characters of {norm_text!r}; "
                "BERT features need one token per character (normalised Chinese text)"
            )
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self.encoder(**inputs).last_hidden_state[0, 1:-1]  # (chars, hidden)
        repeats = torch.tensor(list(word2ph), device=hidden.device)
        return hidden.repeat_interleave(repeats, dim=0).T  # (hidden, phones)
