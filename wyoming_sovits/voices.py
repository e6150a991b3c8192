"""Household voices: ``voices/<name>/voice.yaml`` → ``VoiceProfile``; ``VoiceRegistry`` lists them.

What a voice *is* (reference clip, transcript, languages, own weights, default sampling)
lives here; what one request wants is a ``SynthesisConfig``.  No torch, no audio
decoding: paths are only checked to exist.  The file format is documented in
``voices/README.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .settings import TEXT_LANGUAGES, SettingsError, SynthesisConfig

_LOGGER = logging.getLogger(__name__)

VOICE_FILE = "voice.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
_TOP_LEVEL_KEYS = frozenset(
    {"display_name", "languages", "text_language", "reference", "styles", "weights", "synthesis"}
)
_REFERENCE_KEYS = frozenset({"audio", "text", "language", "aux_audio"})
_WEIGHT_KEYS = frozenset({"gpt", "sovits"})


class VoiceProfileError(ValueError):
    """A ``voice.yaml`` is invalid; the message names the file and the field."""

    def __init__(self, path: Path, field_name: str, problem: str) -> None:
        super().__init__(f"{path}: field '{field_name}': {problem}")
        self.path = path
        self.field_name = field_name


class VoiceNotFoundError(LookupError):
    """The requested voice does not exist; the message lists the valid names."""

    code = "VoiceNotFound"

    def __init__(self, name: str, valid: list[str]) -> None:
        names = ", ".join(valid) if valid else "(none: add voices/<name>/voice.yaml)"
        super().__init__(f"Voice {name!r} not found; available voices: {names}")
        self.name = name
        self.valid = valid


def frontend_language(code: str) -> str:
    """Map a Piper-style code (``en_US``, ``zh_CN``, ``zh_HK``) to a frontend language mode."""
    lang, _, region = code.replace("-", "_").partition("_")
    lang = lang.lower()
    if lang == "yue" or (lang == "zh" and region.upper() in ("HK", "MO")):
        return "yue"
    return lang if lang in TEXT_LANGUAGES else "auto"


@dataclass(frozen=True)
class ReferenceClip:
    """A reference recording (3–10 s) and its exact transcript."""

    audio: Path
    text: str
    language: str  # frontend language mode of ``text``
    aux_audio: tuple[Path, ...] = ()  # extra clips that only shape the timbre


@dataclass(frozen=True)
class VoiceProfile:
    """One household voice, as read from ``voices/<name>/voice.yaml``."""

    name: str  # stable ASCII id = folder name = Wyoming voice name
    display_name: str
    languages: tuple[str, ...]  # Piper-style codes, never empty
    text_language: str  # frontend language mode for request text ("auto", "en", "zh", …)
    reference: ReferenceClip
    path: Path  # the voice.yaml
    mtime: float  # newest mtime of voice.yaml and the clips; part of the prompt cache key
    gpt_weights: Path | None = None
    sovits_weights: Path | None = None
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    styles: Mapping[str, ReferenceClip] = field(
        default_factory=lambda: types.MappingProxyType({}), hash=False, compare=False
    )
    style: str | None = None  # which of ``styles`` replaced ``reference`` (None: the main one)

    def with_style(self, style: str) -> VoiceProfile:
        """This voice speaking with the reference clip of ``style`` (Wyoming ``voice.speaker``).

        Raises ``KeyError`` naming the valid styles when ``style`` is unknown.
        """
        if style not in self.styles:
            valid = ", ".join(sorted(self.styles)) or "(none)"
            raise KeyError(f"voice {self.name!r} has no style {style!r}; styles: {valid}")
        return dataclasses.replace(self, reference=self.styles[style], style=style)


def load_voice(folder: Path) -> VoiceProfile:
    """Read and validate ``folder/voice.yaml``; raises ``VoiceProfileError``."""
    path = folder / VOICE_FILE
    name = folder.name
    if not _NAME_RE.match(name):
        raise VoiceProfileError(
            path, "name", f"folder name {name!r} must be an ASCII id ([A-Za-z0-9_.-], <= 64 chars)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise VoiceProfileError(path, "(file)", f"cannot read YAML: {err}") from err
    if not isinstance(data, dict):
        raise VoiceProfileError(path, "(file)", "must be a mapping of fields")
    _reject_unknown(path, "", data, _TOP_LEVEL_KEYS)

    display_name = data.get("display_name", name)
    if not isinstance(display_name, str) or not display_name.strip():
        raise VoiceProfileError(path, "display_name", "must be a non-empty string")
    languages = _languages(path, data.get("languages"))
    text_language = data.get("text_language", frontend_language(languages[0]))
    if text_language not in TEXT_LANGUAGES:
        raise VoiceProfileError(
            path, "text_language", f"must be one of {', '.join(TEXT_LANGUAGES)}"
        )
    # The transcript is usually in the voice's own language.
    reference = _reference(path, "reference", data.get("reference"), text_language)
    styles = _styles(path, data.get("styles"), text_language)
    gpt_weights, sovits_weights = _weights(path, data.get("weights"))
    synthesis = _synthesis(path, data.get("synthesis"))

    profile = VoiceProfile(
        name=name,
        display_name=display_name.strip(),
        languages=languages,
        text_language=text_language,
        reference=reference,
        path=path,
        mtime=0.0,
        gpt_weights=gpt_weights,
        sovits_weights=sovits_weights,
        synthesis=synthesis,
        styles=types.MappingProxyType(styles),
    )
    return dataclasses.replace(profile, mtime=files_mtime(profile))


def _reject_unknown(
    path: Path, prefix: str, data: Mapping[str, Any], known: frozenset[str]
) -> None:
    unknown = sorted(str(key) for key in set(data) - known)
    if unknown:
        raise VoiceProfileError(
            path, prefix + unknown[0], f"unknown field; valid fields: {', '.join(sorted(known))}"
        )


def _languages(path: Path, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise VoiceProfileError(path, "languages", "must be a non-empty list such as [en_US]")
    for code in value:
        if not isinstance(code, str) or not _LANGUAGE_RE.match(code):
            raise VoiceProfileError(
                path, "languages", f"{code!r} is not a Piper-style code such as en_US or zh_CN"
            )
    return tuple(value)


def _existing_file(path: Path, field_name: str, value: object) -> Path:
    if not isinstance(value, str) or not value:
        raise VoiceProfileError(path, field_name, "must be a file name")
    file = Path(value).expanduser()
    if not file.is_absolute():
        file = path.parent / file
    if not file.is_file():
        raise VoiceProfileError(path, field_name, f"file {file} does not exist")
    return file


def _reference(path: Path, prefix: str, value: object, default_language: str) -> ReferenceClip:
    if not isinstance(value, dict):
        raise VoiceProfileError(path, prefix, "must be a mapping with 'audio' and 'text'")
    _reject_unknown(path, prefix + ".", value, _REFERENCE_KEYS)
    audio = _existing_file(path, f"{prefix}.audio", value.get("audio"))
    text = value.get("text")
    if not isinstance(text, str) or not text.strip():
        raise VoiceProfileError(path, f"{prefix}.text", "must be the transcript of the clip")
    language = value.get("language", default_language)
    if isinstance(language, str) and _LANGUAGE_RE.match(language):
        language = frontend_language(language)
    if language not in TEXT_LANGUAGES:
        raise VoiceProfileError(
            path, f"{prefix}.language", f"must be one of {', '.join(TEXT_LANGUAGES)}"
        )
    aux = value.get("aux_audio", [])
    if not isinstance(aux, list):
        raise VoiceProfileError(path, f"{prefix}.aux_audio", "must be a list of file names")
    aux_files = tuple(_existing_file(path, f"{prefix}.aux_audio", item) for item in aux)
    return ReferenceClip(audio=audio, text=text.strip(), language=language, aux_audio=aux_files)


def _styles(path: Path, value: object, default_language: str) -> dict[str, ReferenceClip]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise VoiceProfileError(path, "styles", "must be a mapping of style name to reference")
    styles = {}
    for style, ref in value.items():
        if not isinstance(style, str) or not _NAME_RE.match(style):
            raise VoiceProfileError(path, "styles", f"style name {style!r} must be an ASCII id")
        styles[style] = _reference(path, f"styles.{style}", ref, default_language)
    return styles


def _weights(path: Path, value: object) -> tuple[Path | None, Path | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise VoiceProfileError(path, "weights", "must be a mapping with 'gpt' and/or 'sovits'")
    _reject_unknown(path, "weights.", value, _WEIGHT_KEYS)
    gpt = _existing_file(path, "weights.gpt", value["gpt"]) if "gpt" in value else None
    sovits = _existing_file(path, "weights.sovits", value["sovits"]) if "sovits" in value else None
    return gpt, sovits


def _synthesis(path: Path, value: object) -> SynthesisConfig:
    if value is None:
        return SynthesisConfig()
    if not isinstance(value, dict):
        raise VoiceProfileError(path, "synthesis", "must be a mapping of sampling options")
    try:
        return SynthesisConfig.from_mapping(value)
    except (SettingsError, TypeError) as err:
        raise VoiceProfileError(path, "synthesis", str(err)) from err


def files_mtime(voice: VoiceProfile) -> float:
    """Newest mtime of the files a voice is made of (0 when one of them vanished)."""
    clips = [voice.reference.audio, *voice.reference.aux_audio]
    for clip in voice.styles.values():
        clips += [clip.audio, *clip.aux_audio]
    try:
        return max(p.stat().st_mtime for p in [voice.path, *clips])
    except OSError:
        return 0.0


class VoiceRegistry:
    """The voices under ``voices_dir``; ``scan()`` re-reads only folders whose files changed.

    Invalid voices are logged and left out (one broken ``voice.yaml`` must not hide the
    others); their errors are kept in ``errors``.  Used from the event-loop thread.
    """

    def __init__(self, voices_dir: Path) -> None:
        self.voices_dir = Path(voices_dir)
        self._voices: dict[str, VoiceProfile] = {}
        self.errors: dict[str, VoiceProfileError] = {}
        self._scanned = False

    def scan(self) -> list[VoiceProfile]:
        """Re-read the voices folder and return the voices sorted by name."""
        found: dict[str, VoiceProfile] = {}
        errors: dict[str, VoiceProfileError] = {}
        folders = sorted(self.voices_dir.iterdir()) if self.voices_dir.is_dir() else []
        if not self.voices_dir.is_dir():
            _LOGGER.warning("Voices folder %s does not exist", self.voices_dir)
        for folder in folders:
            yaml_path = folder / VOICE_FILE
            if not yaml_path.is_file():
                continue
            old = self._voices.get(folder.name)
            if old is not None and files_mtime(old) == old.mtime:
                found[folder.name] = old
                continue
            try:
                found[folder.name] = load_voice(folder)
            except (VoiceProfileError, OSError) as err:
                error = (
                    err
                    if isinstance(err, VoiceProfileError)
                    else VoiceProfileError(yaml_path, "(file)", str(err))
                )
                if folder.name not in self.errors:
                    _LOGGER.error("Skipping voice %s: %s", folder.name, error)
                errors[folder.name] = error
        self._voices = found
        self.errors = errors
        self._scanned = True
        return self.list()

    def names(self) -> list[str]:  # defined before list(), which shadows the builtin
        return [voice.name for voice in self.list()]

    def list(self) -> list[VoiceProfile]:
        """The voices of the last scan (scanning once if needed), sorted by name."""
        if not self._scanned:
            self.scan()
        return [self._voices[name] for name in sorted(self._voices)]

    def get(self, name: str) -> VoiceProfile:
        """The voice ``name``; raises ``VoiceNotFoundError`` listing the valid names."""
        if not self._scanned:
            self.scan()
        voice = self._voices.get(name)
        if voice is None:
            raise VoiceNotFoundError(name, self.names())
        return voice
