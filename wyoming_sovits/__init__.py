"""wyoming-sovits: a Wyoming TTS server speaking in cloned household voices (GPT-SoVITS)."""

__version__ = "0.1.0"
