"""The synthesis pipeline on tiny random models, through the real loading path.

The models folder is laid out as ``download.py`` writes it (tiny s1/s2/sv files in the
official framing, tiny HuBERT/BERT folders with the real configs and tokenizer); the
reference is real speech (LibriVox clips of Debian's ``pocketsphinx-testdata``). Random
GPT weights never emit EOS, so every sentence is capped at a few tokens.
"""

from __future__ import annotations

import io
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scratch import scratch
from tiny_frontends import make_tiny_models_dir

import wyoming_sovits.pipeline as pipeline_module
from wyoming_sovits.__main__ import main
from wyoming_sovits.pipeline import (
    STREAM_FIRST_TOKENS,
    STREAM_HOLD_TOKENS,
    ModelsNotFoundError,
    Pipeline,
    first_decode_at,
)
from wyoming_sovits.prompt import PromptStore, ReferenceAudioError
from wyoming_sovits.settings import SynthesisConfig
from wyoming_sovits.voices import ReferenceClip, VoiceProfile

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0890.wav"  # 5.3 s, 16 kHz
TRANSCRIPT = "unless to be rather cold hearted and rather selfish is to be ill disposed"
MAX_TOKENS = 16
SAMPLES_PER_TOKEN = 1280
PAUSE = 9600  # 0.3 s at 32 kHz

pytestmark = pytest.mark.skipif(
    not CLIP.is_file(), reason="needs Debian pocketsphinx-testdata (apt install it)"
)


def make_voice(audio: Path, name: str = "austen", **kwargs: object) -> VoiceProfile:
    return VoiceProfile(
        name=name,
        display_name=name,
        languages=("en_US",),
        text_language="en",
        reference=ReferenceClip(audio, TRANSCRIPT, "en"),
        path=audio.parent / "voice.yaml",
        mtime=0.0,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with scratch(tmp_path_factory, "models") as folder:
        yield make_tiny_models_dir(folder)


@pytest.fixture(scope="module")
def pipeline(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    cache = tmp_path_factory.mktemp("prompt-cache")
    loaded = Pipeline.load(models_dir, "cpu", "float32", cache_dir=cache)
    loaded.max_new_tokens = MAX_TOKENS
    return loaded


def test_prepare_and_synthesize(pipeline: Pipeline) -> None:
    prompt = pipeline.prepare_prompt(make_voice(CLIP))
    # 5.3 s -> 84800 + 9600 samples -> 294 HuBERT frames -> 147 tokens at 25 Hz.
    assert prompt.tokens.shape == (147,) and prompt.tokens.dtype == torch.long
    assert prompt.bert.shape == (1024, len(prompt.phone_ids))
    assert not prompt.bert.any()  # English transcript: zeros
    assert prompt.ge.shape == (1, pipeline.sovits.config.gin_channels, 1)
    pieces = list(
        pipeline.synthesize("Hello there. How are you today?", prompt, SynthesisConfig(seed=1))
    )
    assert pipeline.sample_rate == 32000
    assert len(pieces) == 2  # cut5: one array per sentence
    for piece in pieces:
        assert piece.dtype == np.float32 and piece.ndim == 1
        tokens = (len(piece) - PAUSE) / SAMPLES_PER_TOKEN
        assert tokens == int(tokens) and 11 <= tokens <= MAX_TOKENS  # EOS barred for 11 steps
        assert np.all(piece[-PAUSE:] == 0) and np.abs(piece).max() <= 1.0
        assert np.isfinite(piece).all() and np.abs(piece[:-PAUSE]).max() > 0


def test_same_seed_same_audio(pipeline: Pipeline) -> None:
    prompt = pipeline.prepare_prompt(make_voice(CLIP))

    def say(seed: int) -> np.ndarray:
        cfg = SynthesisConfig(seed=seed, top_k=50, fragment_pause=0.1)
        return np.concatenate(list(pipeline.synthesize("Good morning!", prompt, cfg)))

    first = say(7)
    assert np.array_equal(first, say(7))
    assert not np.array_equal(first, say(8))


def test_second_prepare_uses_disk_cache(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    voice = make_voice(CLIP)
    first = pipeline.prepare_prompt(voice)
    assert pipeline.store.folder is not None
    assert len(list(pipeline.store.folder.glob("prompt-*.npz"))) == 1

    def no_hubert(wav: object) -> None:
        raise AssertionError("HuBERT must not run for a cached prompt")

    # A fresh store (as after a restart) that only has the disk files to go on.
    monkeypatch.setattr(pipeline, "store", PromptStore(pipeline.store.folder))
    monkeypatch.setattr(pipeline, "hubert", no_hubert)
    again = pipeline.prepare_prompt(voice)
    for name in ("phone_ids", "bert", "tokens", "ge"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    # Another transcript is another prompt: the key covers it.
    other = VoiceProfile(
        **{**voice.__dict__, "reference": ReferenceClip(CLIP, "ill disposed", "en")}
    )
    with pytest.raises(AssertionError, match="must not run"):
        pipeline.prepare_prompt(other)


@pytest.mark.parametrize("seconds", [0.5, 12.0])
def test_reference_outside_3_to_10_seconds(
    pipeline: Pipeline, tmp_path: Path, seconds: float
) -> None:
    clip = tmp_path / f"clip-{seconds}.wav"
    rng = np.random.default_rng(0)
    sf.write(clip, 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000)
    with pytest.raises(ReferenceAudioError, match=rf"{clip.name} lasts {seconds:.2f} s.*3-10 s"):
        pipeline.prepare_prompt(make_voice(clip))


def test_missing_models_are_listed(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelsNotFoundError, match="models download") as err:
        Pipeline.load(tmp_path)
    assert tmp_path / "v2Pro" / "s2Gv2ProPlus.pth" in err.value.missing
    partial = tmp_path / "partial"
    shutil.copytree(models_dir, partial)
    (partial / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt").unlink()
    with pytest.raises(ModelsNotFoundError) as err:
        Pipeline.load(partial)
    assert err.value.missing == [partial / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt"]


def test_streaming_pieces_end_like_the_whole(pipeline: Pipeline) -> None:
    prompt = pipeline.prepare_prompt(make_voice(CLIP))
    cfg = SynthesisConfig(seed=3, noise_scale=0.0)  # noise 0: both paths draw the same tokens
    whole = list(pipeline.synthesize("Good morning!", prompt, cfg))
    pieces = list(pipeline.synthesize("Good morning!", prompt, cfg, stream=True))
    assert len(pieces) >= 3 and np.all(pieces[-1] == 0)  # first audio, the rest, the pause
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole[0])
    # The held-back tail is decoded with every token, as the whole sentence (its vocoder
    # window starts later: rounding only).
    tail = len(pieces[-2])
    np.testing.assert_allclose(streamed[-PAUSE - tail :], whole[0][-PAUSE - tail :], atol=1e-6)


def test_streaming_vocodes_only_the_audio_not_yet_sent(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each decode after the first vocodes from the first unsent frame (less the vocoder's
    reach), not the whole prefix; the text encoder and flow still see every token."""
    sovits = pipeline.sovits.model
    vocoded, flowed = [], []
    vocode, flow = sovits.dec.forward, sovits.flow_reverse

    def spy_vocode(x: torch.Tensor, g: torch.Tensor, lengths: object = None) -> torch.Tensor:
        vocoded.append(x.shape[2])
        return vocode(x, g, lengths)  # type: ignore[arg-type]

    def spy_flow(z: torch.Tensor, *args: object) -> torch.Tensor:
        flowed.append(z.shape[2])
        return flow(z, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sovits.dec, "forward", spy_vocode)
    monkeypatch.setattr(sovits, "flow_reverse", spy_flow)
    prompt = pipeline.prepare_prompt(make_voice(CLIP))
    pieces = list(
        pipeline.synthesize("Good morning!", prompt, SynthesisConfig(seed=3), stream=True)
    )
    assert sum(len(p) for p in pieces) > PAUSE
    reach, per_token = sovits.cfg.vocoder_reach_frames, sovits.cfg.frames_per_token
    assert len(flowed) == len(vocoded) >= 2 and vocoded[0] == flowed[0]
    sent = (flowed[0] // per_token - STREAM_HOLD_TOKENS) * per_token  # frames sent after one
    assert vocoded[1] == flowed[1] - (sent - reach)


def test_first_decode_waits_for_the_audio_in_hand() -> None:
    assert first_decode_at(0) == STREAM_FIRST_TOKENS  # the first sentence: first audio soon
    assert first_decode_at(2) == STREAM_FIRST_TOKENS  # little in hand: as soon as ever
    assert first_decode_at(100) == int(pipeline_module.SENTENCE_LEAD * 100)


@pytest.mark.parametrize("lead", [True, False])
def test_later_sentence_decoded_once_with_audio_in_hand(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, lead: bool
) -> None:
    """A request's second sentence starts with the first one's audio (and pause) sent: it
    is decoded once its tokens are done, not in chunks from its 12th token, and its audio
    is then that of the whole sentence. Without the lead (``SENTENCE_LEAD`` 0) it is
    chunked like the first."""
    if not lead:
        monkeypatch.setattr(pipeline_module, "SENTENCE_LEAD", 0.0)
    sovits = pipeline.sovits.model
    flowed: list[int] = []
    flow = sovits.flow_reverse

    def spy_flow(z: torch.Tensor, *args: object) -> torch.Tensor:
        flowed.append(z.shape[2])
        return flow(z, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(sovits, "flow_reverse", spy_flow)
    prompt = pipeline.prepare_prompt(make_voice(CLIP))
    cfg = SynthesisConfig(seed=3, noise_scale=0.0)  # noise 0: both paths draw the same tokens
    text = "Good morning! How are you?"
    whole = list(pipeline.synthesize(text, prompt, cfg))
    flowed.clear()
    pieces = list(pipeline.synthesize(text, prompt, cfg, stream=True))
    per_token = sovits.cfg.frames_per_token
    first = flowed[:2]  # the first sentence: its 12th token, then its last
    assert first == [STREAM_FIRST_TOKENS * per_token, MAX_TOKENS * per_token]
    later = flowed[2:]
    assert later == ([MAX_TOKENS * per_token] if lead else first)
    streamed = np.concatenate(pieces)
    assert len(streamed) == sum(len(w) for w in whole)
    second = len(whole[1]) - PAUSE
    if lead:  # decoded in one go: the whole sentence's audio
        np.testing.assert_allclose(streamed[-PAUSE - second : -PAUSE], whole[1][:second], atol=1e-6)


def test_voice_with_own_weights(pipeline: Pipeline, models_dir: Path, tmp_path: Path) -> None:
    own = tmp_path / "own-gpt.ckpt"
    shutil.copy(models_dir / "s1v3.ckpt", own)
    prompt = pipeline.prepare_prompt(make_voice(CLIP, gpt_weights=own))
    assert prompt.gpt == own and prompt.sovits == pipeline.paths.sovits
    assert list(pipeline.synthesize("Hi there!", prompt, SynthesisConfig(seed=1)))


def test_speak_cli_writes_wav(
    models_dir: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    voice_dir = tmp_path / "voices" / "austen"
    voice_dir.mkdir(parents=True)
    shutil.copy(CLIP, voice_dir / "ref.wav")
    (voice_dir / "voice.yaml").write_text(
        f"languages: [en_US]\nreference:\n  audio: ref.wav\n  text: {TRANSCRIPT}\n"
    )
    common = [
        "speak",
        "--voice",
        "austen",
        "--voices-dir",
        str(tmp_path / "voices"),
        "--data-dir",
        str(models_dir),
        "--device",
        "cpu",
        "--seed",
        "1",
        "--max-tokens",
        str(MAX_TOKENS),
        "--text",
        "Hello there!",
    ]
    out = tmp_path / "out.wav"
    assert main([*common, "--out", str(out)]) == 0
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (32000, 2, 1)
        assert wav.getnframes() > PAUSE
    capsysbinary.readouterr()
    assert main([*common, "--out", "-"]) == 0
    assert capsysbinary.readouterr().out == out.read_bytes()  # seeded: same bytes to stdout
    assert main([*common[:2], "nobody", *common[3:], "--out", str(out)]) == 1
    with io.BytesIO(out.read_bytes()) as f:
        assert sf.info(f).samplerate == 32000


def test_sentence_features_are_kept(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sentence said again reuses its phones and BERT features; the cache is bounded in
    sentences and in phones and keeps the most recently used; an unspeakable sentence is
    still skipped each time."""
    calls: list[str] = []
    real = pipeline_module.text_features

    def counting(text: str, *args: object) -> object:
        calls.append(text)
        return real(text, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "text_features", counting)
    monkeypatch.setattr(pipeline_module, "TEXT_CACHE_SENTENCES", 2)
    pipeline._text_cache.clear()  # earlier tests' sentences
    first = pipeline._sentence_features("The kettle is on.", "en")
    again = pipeline._sentence_features("The kettle is on.", "en")
    assert first is not None and again is first and calls == ["The kettle is on."]
    assert pipeline._sentence_features("The kettle is on.", "zh") is not first  # its own mode
    pipeline._sentence_features("The kettle is on.", "en")  # most recent again
    pipeline._sentence_features("Dinner is ready.", "en")  # evicts the "zh" entry
    assert list(pipeline._text_cache) == [("The kettle is on.", "en"), ("Dinner is ready.", "en")]
    assert pipeline._sentence_features("...", "en") is None
    assert pipeline._sentence_features("...", "en") is None
    assert calls.count("...") == 2
    kept = sum(len(f.ids) for f in pipeline._text_cache.values())
    assert pipeline._text_cache.phones == kept
    monkeypatch.setattr(pipeline_module, "TEXT_CACHE_PHONES", kept + 1)  # full by phones
    pipeline._sentence_features("The washing machine has finished.", "en")
    assert ("The kettle is on.", "en") not in pipeline._text_cache  # the oldest went
    kept = sum(len(f.ids) for f in pipeline._text_cache.values())
    assert pipeline._text_cache.phones == kept <= pipeline_module.TEXT_CACHE_PHONES


def test_english_requests_skip_their_zero_features(pipeline: Pipeline) -> None:
    """English phones come with BERT features known to be zeros: the GPT's input marks
    them so (packing neither reads nor copies them) and holds a zero view, not a copy;
    Chinese text gets real features, read as they are."""
    prompt = pipeline.prepare_prompt(make_voice(CLIP))  # an English transcript
    english = pipeline._sentence_features("The kettle is on.", "en")
    chinese = pipeline._sentence_features("水开了。", "zh")
    assert english is not None and chinese is not None
    assert english.bert_zeros and not english.bert.any()
    assert not chinese.bert_zeros and chinese.bert.any()
    cfg = pipeline_module.DEFAULTS.merged(SynthesisConfig())
    item = pipeline._plan(prompt, english, cfg).item
    assert item.bert_zeros and item.bert.stride() == (0, 0)
    assert item.bert.shape == (pipeline.gpt.config.bert_dim, len(item.phone_ids))
    mixed = pipeline._plan(prompt, chinese, cfg).item
    assert not mixed.bert_zeros and mixed.bert[:, -len(chinese.ids) :].equal(chinese.bert)
