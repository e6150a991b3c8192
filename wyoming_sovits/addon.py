"""Home Assistant add-on options (``/data/options.json``) -> ``serve`` command-line flags.

The add-on's s6 ``run`` script holds no option logic: it calls ``wyoming-sovits addon-run``,
which maps the Supervisor-validated options one-to-one onto the CLI flags here, so the
mapping is tested like the rest of the code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ADDON_URI = "tcp://0.0.0.0:10200"
ADDON_DATA_DIR = "/data"
# Always passed: the first start downloads the weights into /data/models and, while the
# voices folder holds no voice, serves the bundled example voice (DOCS.md, "Installation").
FIRST_START_FLAGS = ("--download", "--example-voice")

# option name -> serve flag, for options whose value is passed as is.
_VALUE_FLAGS = {
    "default_voice": "--default-voice",
    "voices_dir": "--voices-dir",
    "model_version": "--model-version",
    "device": "--device",
    "samples_per_chunk": "--samples-per-chunk",
    "max_text_chars": "--max-text-chars",
    "phrase_cache_size": "--phrase-cache-size",
}
# option name -> (flag added when the option is true, flag added when it is false)
_BOOL_FLAGS = {
    "streaming": (None, "--no-streaming"),
    "debug_logging": ("--debug", None),
}
OPTION_NAMES = frozenset(_VALUE_FLAGS) | frozenset(_BOOL_FLAGS)


class AddonOptionsError(ValueError):
    """The options file is missing, unreadable or holds an option we do not know."""


def options_to_argv(options: Mapping[str, Any], *, data_dir: str = ADDON_DATA_DIR) -> list[str]:
    """Return the ``serve`` arguments for the add-on's options.

    Empty optional strings (e.g. no default voice) are left out, so the server's own
    default applies. Unknown options are refused rather than silently dropped.
    """
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise AddonOptionsError(
            f"unknown add-on option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_NAMES))}"
        )
    argv = ["--uri", ADDON_URI, "--data-dir", data_dir, "--zeroconf", *FIRST_START_FLAGS]
    for name, flag in _VALUE_FLAGS.items():
        value = options.get(name)
        if value is None or value == "":
            continue
        argv += [flag, str(value)]
    for name, (when_true, when_false) in _BOOL_FLAGS.items():
        if name not in options:
            continue
        bool_flag = when_true if options[name] else when_false
        if bool_flag:
            argv.append(bool_flag)
    return argv


def read_options(path: Path) -> dict[str, Any]:
    """Read the Supervisor's options file, with an error that names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AddonOptionsError(f"cannot read add-on options {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise AddonOptionsError(f"add-on options {path} are not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise AddonOptionsError(f"add-on options {path} must be a JSON object")
    return data
