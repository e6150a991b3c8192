"""Sub-commands of ``wyoming-sovits``; see ``wyoming_sovits.__main__``."""
