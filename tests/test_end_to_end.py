"""From a recording to speech: ``voice add`` → prepare the prompt → ``speak``, then a restart.

Everything goes through the product's own entry points on tiny random models (CPU): the
recording is real speech (three LibriVox clips of Debian's ``pocketsphinx-testdata``
joined by pauses, stored as 44.1 kHz stereo FLAC as a phone or laptop would give it), the
voice is enrolled in the documented two steps (let it pick a clip, then give that clip's
transcript), ``speak`` writes the WAV, and a second ``Pipeline`` on the same cache folder
(as after a server restart) gets the prompt from disk without running HuBERT.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_enroll import TEXT_0870, long_recording
from tiny_frontends import make_tiny_models_dir

from wyoming_sovits.__main__ import main
from wyoming_sovits.audio import resample
from wyoming_sovits.cli.speak import wav_bytes
from wyoming_sovits.models.ssl import HubertEncoder
from wyoming_sovits.pipeline import Pipeline
from wyoming_sovits.prompt import load_reference, reference_ge
from wyoming_sovits.settings import SynthesisConfig
from wyoming_sovits.voices import VoiceRegistry

CLIPS = ["0870", "0890", "0920"]
TRANSCRIPTS = {
    "0870": TEXT_0870,
    "0890": "Unless to be rather cold hearted and rather selfish is to be ill disposed.",
    "0920": "Had he married a more amiable woman, he might have been made still more "
    "respectable than he was.",
}
TEXT = "Dinner is ready!"
MAX_TOKENS = 16
SAMPLES_PER_TOKEN = 1280  # 25 Hz tokens at 32 kHz
PAUSE = 9600  # 0.3 s after every sentence
MIN_TOKENS = 11  # EOS is barred for the first steps; random weights then run to the cap


def enroll(voices: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """``voice add`` twice, as the help text says; returns the chosen source clip's id."""
    audio, spans = long_recording(CLIPS)
    recording = tmp_path / "family-recording.flac"
    stereo = np.stack([resample(audio, 16000, 44100)] * 2, axis=1)  # (T, 2)
    sf.write(recording, 0.8 * stereo, 44100, format="FLAC", subtype="PCM_16")
    common = ["voice", "add", "jane", "--audio", str(recording), "--language", "en_US",
              "--voices-dir", str(voices)]  # fmt: skip

    preview = tmp_path / "preview.wav"
    assert main([*common, "--preview", str(preview)]) == 1  # first: which clip to transcribe
    err = capsys.readouterr().err
    found = re.search(r"the clip (\d+\.\d+)-(\d+\.\d+) s", err)
    assert found, err
    start, end = float(found[1]), float(found[2])
    assert 3.0 <= sf.info(preview).duration <= 10.0 and not (voices / "jane").exists()
    (clip,) = [c for c, s in zip(CLIPS, spans, strict=True) if s.start - 0.3 <= start < s.end]

    code = main([*common, "--clip", f"{start:.2f}-{end:.2f}", "--text", TRANSCRIPTS[clip],
                 "--aux-clips", "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Added voice 'jane'" in out
    return clip


def test_enroll_prepare_speak_and_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    voices, cache = tmp_path / "voices", tmp_path / "prompt-cache"
    enroll(voices, tmp_path, capsys)
    voice = VoiceRegistry(voices).get("jane")
    assert len(voice.reference.aux_audio) == 1
    models = make_tiny_models_dir(tmp_path / "models")

    hubert_calls: list[int] = []
    real_hubert = HubertEncoder.__call__

    def counting_hubert(self: HubertEncoder, wav16k: torch.Tensor) -> torch.Tensor:
        hubert_calls.append(int(wav16k.shape[-1]))
        return real_hubert(self, wav16k)

    monkeypatch.setattr(HubertEncoder, "__call__", counting_hubert)
    out = tmp_path / "dinner.wav"
    code = main(["speak", "--voice", "jane", "--voices-dir", str(voices), "--data-dir",
                 str(models), "--cache-dir", str(cache), "--device", "cpu", "--dtype", "float32",
                 "--seed", "1", "--max-tokens", str(MAX_TOKENS), "--text", TEXT,
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    main_clip = load_reference(voice.reference.audio)
    assert hubert_calls == [len(main_clip.wav16k)]  # the main clip only; aux clips skip HuBERT
    assert len(list(cache.glob("prompt-*.npz"))) == 1

    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (32000, 2, 1)
        frames = wav.getnframes()
        pcm = np.frombuffer(wav.readframes(frames), dtype="<i2")
    tokens = (frames - PAUSE) / SAMPLES_PER_TOKEN  # one sentence and its pause
    assert tokens == int(tokens) and MIN_TOKENS <= tokens <= MAX_TOKENS, frames
    assert np.abs(pcm[:-PAUSE]).max() > 0 and not pcm[-PAUSE:].any()

    # A restart: a new Pipeline on the same cache folder gets the prompt without HuBERT.
    restarted = Pipeline.load(models, "cpu", "float32", cache_dir=cache)
    restarted.max_new_tokens = MAX_TOKENS
    prompt = restarted.prepare_prompt(voice)
    assert len(hubert_calls) == 1
    # The cached ge is the mean over the main and the aux clip that enrollment wrote
    # (tests/test_prompt.py shows the aux clip changes it).
    sovits = restarted.sovits.model
    sv = restarted.sv.model if restarted.sv is not None else None
    aux_clip = load_reference(voice.reference.aux_audio[0], check_length=False)
    torch.testing.assert_close(prompt.ge, reference_ge(sovits, sv, [main_clip, aux_clip]))
    # Same seed, prompt from disk: the very bytes `speak` wrote.
    cfg = voice.synthesis.merged(SynthesisConfig(seed=1))
    audio = np.concatenate(list(restarted.synthesize(TEXT, prompt, cfg)))
    assert wav_bytes(audio, restarted.sample_rate) == out.read_bytes()
