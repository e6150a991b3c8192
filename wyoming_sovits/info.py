"""The Wyoming ``info`` answer: one TTS program, one voice per household member."""

from __future__ import annotations

from collections.abc import Sequence

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice

from . import __version__
from .settings import ServerSettings
from .voices import VoiceProfile

ATTRIBUTION = Attribution(name="RVC-Boss/GPT-SoVITS", url="https://github.com/RVC-Boss/GPT-SoVITS")


def build_voice(voice: VoiceProfile) -> TtsVoice:
    """A voice as Home Assistant lists it: the id as name, the display name as description."""
    return TtsVoice(
        name=voice.name,
        description=voice.display_name,
        attribution=ATTRIBUTION,
        installed=True,
        version=None,
        languages=list(voice.languages),
        # Styles stay reachable through the ``speaker`` option of tts.speak, but HA's UI
        # shows no speakers, so each household member is advertised as its own voice.
        speakers=None,
    )


def build_info(voices: Sequence[VoiceProfile], settings: ServerSettings) -> Info:
    """The ``info`` event data for ``voices`` (call on every ``describe``)."""
    program = TtsProgram(
        name=settings.program_name,
        description="Cloned household voices (GPT-SoVITS)",
        attribution=ATTRIBUTION,
        installed=True,
        version=__version__,
        voices=[build_voice(voice) for voice in voices],
        supports_synthesize_streaming=settings.streaming,
    )
    return Info(tts=[program])
