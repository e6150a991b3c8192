"""Voice prompts below the pipeline: ``ge`` averaged over aux clips, and clip length caps.

Tiny random SoVITS (v2 and v2ProPlus) and speaker models, written in the official
framing and read back through ``checkpoints``; the clips are LibriVox speech from
Debian's ``pocketsphinx-testdata``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from make_tiny_models import make_tiny_models
from scratch import scratch

from wyoming_sovits.audio import linear_spectrogram
from wyoming_sovits.checkpoints import load_sovits, load_sv
from wyoming_sovits.models.sv import SpeakerEncoder
from wyoming_sovits.models.vits import SoVITS
from wyoming_sovits.prompt import ReferenceAudio, ReferenceAudioError, load_reference, reference_ge

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
if not LIBRIVOX.is_dir():  # CI installs it (.ci/run); a skip would hide the missing data
    raise RuntimeError("needs Debian pocketsphinx-testdata: apt-get install pocketsphinx-testdata")
MAIN = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0890.wav"  # 5.3 s
AUX = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav"  # 3.3 s


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with scratch(tmp_path_factory, "tiny") as folder:
        yield make_tiny_models(folder)


@pytest.fixture(scope="module")
def pro(models: dict[str, Path]) -> tuple[SoVITS, SpeakerEncoder]:
    sovits = load_sovits(models["sovits_v2ProPlus"]).model.eval()
    return sovits, load_sv(models["sv"]).model.eval()


@pytest.fixture(scope="module")
def clips() -> tuple[ReferenceAudio, ReferenceAudio]:
    """Two clips cut to 3 s: the speaker model's cost grows with length, ge's rule does not."""

    def first_3_s(clip: ReferenceAudio) -> ReferenceAudio:
        return ReferenceAudio(clip.path, clip.wav16k[: 3 * 16000], clip.wav32k[: 3 * 32000])

    return first_3_s(load_reference(MAIN)), first_3_s(load_reference(AUX, check_length=False))


@torch.inference_mode()
def one_ge(sovits: SoVITS, clip: ReferenceAudio) -> torch.Tensor:
    """One clip's ge as upstream's v2 decode computes it: ref_enc of the 32 kHz spectrogram."""
    return sovits.encode_reference(linear_spectrogram(torch.from_numpy(clip.wav32k)[None]))


def test_ge_is_the_mean_of_the_per_clip_ge(
    pro: tuple[SoVITS, SpeakerEncoder], clips: tuple[ReferenceAudio, ReferenceAudio]
) -> None:
    sovits, sv = pro
    main, aux = clips
    single = reference_ge(sovits, sv, [main])
    aux_only = reference_ge(sovits, sv, [aux])
    both = reference_ge(sovits, sv, [main, aux])
    assert single.shape == both.shape == (1, sovits.cfg.gin_channels, 1)
    assert single.dtype == both.dtype == torch.float32
    # Upstream stacks one ge per reference (PReLU(ref_enc + sv_emb(sv)) for v2Pro) and takes
    # the mean ("multi-speaker tone fusion"); prompt tokens stay the main clip's.
    torch.testing.assert_close(both, (single + aux_only) / 2)
    assert (both - single).abs().max() > 1e-3  # the aux clip does change the voice vector


def test_ge_without_speaker_model(
    models: dict[str, Path],
    pro: tuple[SoVITS, SpeakerEncoder],
    clips: tuple[ReferenceAudio, ReferenceAudio],
) -> None:
    main, aux = clips
    v2 = load_sovits(models["sovits_v2"]).model.eval()
    torch.testing.assert_close(reference_ge(v2, None, [main]), one_ge(v2, main))
    both = reference_ge(v2, None, [main, aux])  # v2: spectrograms only
    torch.testing.assert_close(both, (one_ge(v2, main) + one_ge(v2, aux)) / 2)
    assert (both - one_ge(v2, main)).abs().max() > 1e-4
    with pytest.raises(ReferenceAudioError, match="speaker-verification model"):
        reference_ge(pro[0], None, [main])


def test_reference_length_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)

    def write(name: str, seconds: float, sr: int = 8000) -> Path:
        audio = 0.1 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
        sf.write(tmp_path / name, audio, sr, subtype="PCM_16")
        return tmp_path / name

    whole = write("whole-recording.wav", 600.0)
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> object:
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    with pytest.raises(ReferenceAudioError, match=r"whole-recording\.wav lasts 600\.00 s.*3-10 s"):
        load_reference(whole)
    with pytest.raises(ReferenceAudioError, match=r"lasts 600\.00 s; aux clips may last 30 s"):
        load_reference(whole, check_length=False)
    assert reads == []  # refused from the header: ten minutes never decoded
    # Just past 10 s passes the decode cap and meets the exact rule at 16 kHz.
    with pytest.raises(ReferenceAudioError, match=r"lasts 10\.50 s; it must be 3-10 s"):
        load_reference(write("long.wav", 10.5))
    assert max(reads) <= 11 * 8000 + 1  # decoding stops at the cap
    aux = load_reference(write("aux.wav", 20.0), check_length=False)  # aux may be longer
    assert aux.seconds == pytest.approx(20.0) and len(aux.wav32k) == 20 * 32000
