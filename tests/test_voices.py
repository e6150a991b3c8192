"""voice.yaml parsing and validation, the registry, settings and the info answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_backend import write_voice

from wyoming_sovits.info import build_info
from wyoming_sovits.settings import ServerSettings, SettingsError, SynthesisConfig
from wyoming_sovits.voices import (
    VoiceNotFoundError,
    VoiceProfileError,
    VoiceRegistry,
    frontend_language,
    load_voice,
)

FULL = """\
display_name: Grandma Erna
languages: [zh_CN, en_US]
text_language: auto
reference:
  audio: ref.wav
  text: 今天天气很好。
  language: zh
  aux_audio: [calm.wav]
styles:
  calm:
    audio: calm.wav
    text: Calm voice.
    language: en_US
weights:
  gpt: erna.ckpt
  sovits: erna.pth
synthesis:
  top_k: 15
  top_p: 0.9
  temperature: 0.8
  repetition_penalty: 1.35
  speed: 1.1
  seed: 42
  noise_scale: 0.5
  fragment_pause: 0.3
"""


def test_full_voice_yaml(tmp_path: Path) -> None:
    folder = write_voice(tmp_path, "erna")
    (folder / "erna.ckpt").write_bytes(b"x")
    (folder / "erna.pth").write_bytes(b"x")
    (folder / "voice.yaml").write_text(FULL, encoding="utf-8")
    voice = load_voice(folder)
    assert voice.name == "erna" and voice.display_name == "Grandma Erna"
    assert voice.languages == ("zh_CN", "en_US") and voice.text_language == "auto"
    assert voice.reference.audio == folder / "ref.wav" and voice.reference.language == "zh"
    assert voice.reference.aux_audio == (folder / "calm.wav",)
    assert voice.gpt_weights == folder / "erna.ckpt" and voice.sovits_weights == folder / "erna.pth"
    assert voice.synthesis == SynthesisConfig(
        top_k=15, top_p=0.9, temperature=0.8, repetition_penalty=1.35, speed=1.1, seed=42,
        noise_scale=0.5, fragment_pause=0.3,
    )  # fmt: skip
    calm = voice.with_style("calm")
    assert calm.style == "calm" and calm.reference.text == "Calm voice."
    assert calm.reference.language == "en"
    with pytest.raises(KeyError, match="calm"):
        voice.with_style("angry")


def test_minimal_defaults(tmp_path: Path) -> None:
    voice = load_voice(write_voice(tmp_path, "bob", languages=("de_DE",)))
    assert voice.display_name == "Bob" and voice.text_language == "auto"
    assert voice.synthesis == SynthesisConfig() and voice.gpt_weights is None
    voice = load_voice(write_voice(tmp_path, "amy", languages=("en_GB",)))
    assert voice.text_language == "en" and voice.reference.language == "en"


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("languages: []\nreference: {audio: ref.wav, text: Hi}\n", "languages"),
        ("languages: [english]\nreference: {audio: ref.wav, text: Hi}\n", "languages"),
        ("languages: [en_US]\n", "reference"),
        ("languages: [en_US]\nreference: {audio: missing.wav, text: Hi}\n", "reference.audio"),
        ("languages: [en_US]\nreference: {audio: ref.wav, text: ''}\n", "reference.text"),
        ("languages: [en_US]\nreference: {audio: ref.wav, text: Hi, bogus: 1}\n", "reference.bogus"),
        ("languages: [en_US]\ntext_language: klingon\nreference: {audio: ref.wav, text: Hi}\n", "text_language"),
        ("languages: [en_US]\nreference: {audio: ref.wav, text: Hi}\nsynthesis: {top_k: 0}\n", "synthesis"),
        ("languages: [en_US]\nreference: {audio: ref.wav, text: Hi}\nsynthesis: {topk: 5}\n", "synthesis"),
        ("languages: [en_US]\nreference: {audio: ref.wav, text: Hi}\nweights: {gpt: no.ckpt}\n", "weights.gpt"),
        ("languges: [en_US]\n", "languges"),
        ("[unclosed\n", "(file)"),
    ],
)  # fmt: skip
def test_invalid_voice_names_file_and_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    folder = write_voice(tmp_path, "bad")
    (folder / "voice.yaml").write_text(yaml_text, encoding="utf-8")
    with pytest.raises(VoiceProfileError) as info:
        load_voice(folder)
    assert info.value.field_name == field
    assert str(folder / "voice.yaml") in str(info.value) and f"'{field}'" in str(info.value)


def test_registry_scan_get_and_errors(tmp_path: Path) -> None:
    write_voice(tmp_path, "bob")
    write_voice(tmp_path, "alice")
    bad = write_voice(tmp_path, "broken")
    (bad / "voice.yaml").write_text("languages: []\n", encoding="utf-8")
    (tmp_path / "not-a-voice").mkdir()
    registry = VoiceRegistry(tmp_path)
    assert registry.names() == ["alice", "bob"]
    assert set(registry.errors) == {"broken"}
    with pytest.raises(VoiceNotFoundError, match="alice, bob") as info:
        registry.get("zed")
    assert info.value.code == "VoiceNotFound"
    first = registry.get("alice")
    assert registry.scan() and registry.get("alice") is first  # unchanged: not re-read
    write_voice(tmp_path, "alice", display_name="Alice B.")
    registry.scan()
    assert registry.get("alice").display_name == "Alice B."
    assert VoiceRegistry(tmp_path / "missing").scan() == []


def test_frontend_language() -> None:
    assert frontend_language("en_US") == "en"
    assert frontend_language("zh_CN") == "zh"
    assert frontend_language("zh_HK") == "yue"
    assert frontend_language("ja-JP") == "ja"
    assert frontend_language("de_DE") == "auto"


def test_synthesis_config_merge_and_validation() -> None:
    base = SynthesisConfig(top_k=5, seed=1)
    merged = base.merged(SynthesisConfig(top_k=9, speed=1.2))
    assert merged == SynthesisConfig(top_k=9, seed=1, speed=1.2)
    assert base.deterministic and not SynthesisConfig().deterministic
    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"speed": 9.0}, {"top_k": 1.5}):
        with pytest.raises(SettingsError):
            SynthesisConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="device"):
        ServerSettings(device="tpu")


def test_info_from_voices(tmp_path: Path) -> None:
    write_voice(tmp_path, "alice", languages=("en_US", "de_DE"), display_name="Alice")
    info = build_info(VoiceRegistry(tmp_path).list(), ServerSettings(streaming=False))
    (program,) = info.tts
    assert program.installed and program.name == "GPT-SoVITS" and program.version
    assert program.supports_synthesize_streaming is False
    (voice,) = program.voices
    assert (voice.name, voice.description, voice.languages) == (
        "alice",
        "Alice",
        ["en_US", "de_DE"],
    )
    assert voice.installed and voice.speakers is None
