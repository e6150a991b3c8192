"""``wyoming-sovits speak``: say one text with one voice into a WAV file, without a server.

Handy to audition a new voice (its reference clip and transcript) and to check an
install: it goes through the same pipeline the server uses, models loaded the same way.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import wave
from pathlib import Path
from typing import Any

from ..settings import DEVICES, DTYPES, SynthesisConfig

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "speak",
        help="synthesise a text with a voice into a WAV file",
        description="Synthesise TEXT with VOICE into a 16-bit 32 kHz WAV (stdout for '-').",
    )
    parser.add_argument("--voice", required=True, help="voice name (folder under --voices-dir)")
    parser.add_argument("--text", required=True, help="what to say")
    parser.add_argument("--out", required=True, help="output .wav path, or - for stdout")
    parser.add_argument(
        "--voices-dir", type=Path, default=Path("voices"), help="folder of voices/<name>/voice.yaml"
    )
    parser.add_argument(
        "--data-dir",
        "--models-dir",
        dest="data_dir",
        type=Path,
        default=Path("data"),
        help="folder with the model weights (default: ./data)",
    )
    parser.add_argument("--model-version", default="v2ProPlus", help="weight set to load")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument("--seed", type=int, help="fix the seed: the same text gives the same audio")
    parser.add_argument("--speed", type=float, help="speaking rate (1.0 = as the voice)")
    parser.add_argument(
        "--cache-dir", type=Path, help="prompt cache folder (default: <data-dir>/prompt-cache)"
    )
    parser.add_argument(
        "--max-tokens", type=int, help="cap on semantic tokens per sentence (25 per second)"
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.set_defaults(func=run)


def wav_bytes(audio: Any, sample_rate: int) -> bytes:
    """A complete 16-bit mono WAV in memory (so stdout needs no seeking)."""
    from ..audio import float_to_pcm16

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(float_to_pcm16(audio))
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError
    from ..voices import VoiceNotFoundError

    try:
        return _speak(args)
    except (VoiceNotFoundError, CheckpointError, OSError, ValueError) as err:
        # Missing models or voice, a bad clip or text: the message says what to fix.
        print(f"wyoming-sovits speak: {err}", file=sys.stderr)
        return 1


def _speak(args: argparse.Namespace) -> int:
    import numpy as np  # heavy imports only when the command runs

    from ..pipeline import Pipeline
    from ..voices import VoiceRegistry

    voice = VoiceRegistry(args.voices_dir).get(args.voice)
    start = time.perf_counter()
    pipeline = Pipeline.load(
        args.data_dir, args.device, args.dtype, args.model_version, cache_dir=args.cache_dir
    )
    pipeline.max_new_tokens = args.max_tokens
    loaded = time.perf_counter()
    prompt = pipeline.prepare_prompt(voice)
    prepared = time.perf_counter()
    cfg = voice.synthesis.merged(SynthesisConfig(seed=args.seed, speed=args.speed))
    pieces = list(pipeline.synthesize(args.text, prompt, cfg, stream=False))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    done = time.perf_counter()
    data = wav_bytes(audio, pipeline.sample_rate)
    if args.out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(args.out).write_bytes(data)
    _LOGGER.info(
        "%.2f s of audio; load %.1f s, prompt %.1f s, synthesis %.1f s",
        len(audio) / pipeline.sample_rate,
        loaded - start,
        prepared - loaded,
        done - prepared,
    )
    return 0
