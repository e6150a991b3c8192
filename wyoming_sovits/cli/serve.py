"""``wyoming-sovits serve``: load the model, warm up, then answer Wyoming clients.

Order matters for Home Assistant: the model is loaded and the default voice warmed up
*before* the server listens, so the first ``describe`` (1 s timeout) and the first
synthesis (wyoming-bench's 8 s probe) never wait for a cold model.

First start of a packaged server (Docker image, add-on): ``--download`` fetches the weights
before anything else, and ``--example-voice`` copies the bundled example voice into an
empty voices folder, so a fresh install speaks at once and the log says how to enroll.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import importlib.util
import logging
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from wyoming.server import AsyncServer

from ..download import DEFAULT_VERSION, WEIGHT_SETS
from ..engine import Engine, SynthesisBackend, WarmUpError, freeze_heap
from ..handler import SovitsEventHandler
from ..settings import DEVICES, DTYPES, GPT_KERNELS, ServerSettings, SettingsError
from ..voices import VoiceRegistry

MODEL_VERSIONS = tuple(WEIGHT_SETS)

_LOGGER = logging.getLogger(__name__)

DEFAULT_URI = "tcp://0.0.0.0:10200"
# Package data: a public-domain LibriVox reading, with its licence (LICENSE.md) beside it.
EXAMPLE_VOICES_DIR = Path(__file__).resolve().parent.parent / "data" / "voices"
EXAMPLE_VOICE = "austen"
_MDNS_TARGET_IP = "224.0.0.251"


class ServeError(RuntimeError):
    """The server cannot start; the message says what to fix."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the Wyoming TTS server (default command)",
        description="Run the Wyoming TTS server for Home Assistant.",
    )
    parser.add_argument(
        "--uri", default=DEFAULT_URI, help="tcp://HOST:PORT, unix://PATH or stdio://"
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        type=Path,
        help="folder with model weights (repeatable; default: ./data)",
    )
    parser.add_argument(
        "--voices-dir", type=Path, default=Path("voices"), help="folder of voices/<name>/voice.yaml"
    )
    parser.add_argument("--default-voice", help="voice used when a request names none")
    parser.add_argument(
        "--example-voice",
        action="store_true",
        help=f"when the voices folder holds no voice, copy the bundled example voice "
        f"({EXAMPLE_VOICE}) into it and serve that (the Docker image and the add-on do)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument(
        "--model-version",
        choices=MODEL_VERSIONS,
        default=DEFAULT_VERSION,
        help="official weight set in DATA_DIR/models (default: %(default)s)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download missing weights into the first --data-dir before starting",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    parser.add_argument(
        "--gpt-kernels",
        choices=GPT_KERNELS,
        default="auto",
        help="GPT decode step on CUDA: PyTorch modules in a CUDA graph (torch), or the fused "
        "Triton step and sampler, their launch shapes timed on this GPU at start (triton); "
        "auto: triton on CUDA when Triton is installed (falls back to torch if it fails)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=1,
        metavar="N",
        help="CUDA: decode up to N sentences (from any clients) together: GPT steps, "
        "prefills and SoVITS decodes batched (experimental; each row holds a KV cache of "
        "~125 MB in fp16)",
    )
    parser.add_argument(
        "--sovits-compile",
        action="store_true",
        help="CUDA: compile the SoVITS decode with TorchInductor before capturing its graphs "
        "(a 1 s decode 6.0 -> 4.6 ms on an H200; about 4 minutes of compiling at the first "
        "start, less once the compiler's cache, TORCHINDUCTOR_CACHE_DIR, is warm)",
    )
    parser.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        metavar="NAME",
        help="announce the server over mDNS (optionally under NAME)",
    )
    parser.add_argument(
        "--no-streaming",
        action="store_true",
        help="do not advertise streaming synthesis (synthesize-start/chunk/stop)",
    )
    parser.add_argument("--samples-per-chunk", type=int, default=1024)
    parser.add_argument(
        "--max-text-chars", type=int, default=4000, help="longest accepted text (0: no limit)"
    )
    parser.add_argument(
        "--prompt-cache-size", type=int, default=8, help="prepared voice prompts kept"
    )
    parser.add_argument(
        "--phrase-cache-size", type=int, default=64, help="synthesised phrases kept (0: off)"
    )
    parser.add_argument(
        "--phrase-cache-any",
        action="store_true",
        help="cache phrases even without a fixed seed in the voice's synthesis settings",
    )
    parser.add_argument("--no-warm-up", action="store_true", help="skip the warm-up synthesis")
    parser.add_argument("--debug", action="store_true", help="log DEBUG messages")
    parser.add_argument("--log-format", help="Python logging format string")
    # Developer flag: run with another backend, given as module:factory or
    # path/to/file.py:factory, called with the settings (e.g. tests/fake_backend.py:make),
    # so the protocol can be tested without model files. Listed in the README's table.
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        uri=args.uri,
        data_dirs=tuple(args.data_dir or [Path("data")]),
        voices_dir=args.voices_dir,
        default_voice=args.default_voice,
        device=args.device,
        dtype=args.dtype,
        model_version=args.model_version,
        download=args.download,
        streaming=not args.no_streaming,
        samples_per_chunk=args.samples_per_chunk,
        max_text_chars=args.max_text_chars,
        zeroconf=args.zeroconf is not None,
        zeroconf_name=args.zeroconf or None,
        prompt_cache_size=args.prompt_cache_size,
        phrase_cache_size=args.phrase_cache_size,
        phrase_cache_nondeterministic=args.phrase_cache_any,
        warm_up=not args.no_warm_up,
        gpt_kernels=args.gpt_kernels,
        max_streams=args.max_streams,
        sovits_compile=args.sovits_compile,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        # Weights first: a first start must not stop at an empty voices folder before
        # the (long) download has even begun.
        data_dir = None if args.backend else _data_dir_with_weights(settings)
        registry, default_voice = _load_voices(settings, example_voice=args.example_voice)
        settings = _with_default_voice(settings, default_voice)
        backend = load_backend(args.backend, settings, data_dir=data_dir)
    except (ServeError, SettingsError) as err:
        _LOGGER.error("%s", err)
        return 1
    engine = Engine(backend, registry, settings)
    engine.start()
    try:
        if settings.warm_up:
            engine.warm_up([default_voice])  # and then freezes the heap
        else:
            freeze_heap()
        asyncio.run(serve(settings, engine, registry))
    except WarmUpError as err:
        _LOGGER.error("%s", err)
        return 1
    except KeyboardInterrupt:
        _LOGGER.info("Interrupted")
    finally:
        engine.close()
    return 0


def _load_voices(
    settings: ServerSettings, *, example_voice: bool = False
) -> tuple[VoiceRegistry, str]:
    """The voice registry and the default voice's name.

    With ``example_voice``, a voices folder holding no voice at all (a first start) gets
    the bundled example voice; a folder with only broken voices is still an error, so a
    typo in someone's ``voice.yaml`` is not hidden behind a stranger's voice.
    """
    registry = VoiceRegistry(settings.voices_dir)
    names = [voice.name for voice in registry.scan()]
    if not names and example_voice and not registry.errors:
        registry = _seed_example_voice(settings.voices_dir)
        names = registry.names()
    if not names:
        problems = "; ".join(str(err) for err in registry.errors.values())
        raise ServeError(
            f"No usable voice in {settings.voices_dir.resolve()}"
            + (f" ({problems})" if problems else "")
            + ": add voices/<name>/voice.yaml as described in voices/README.md"
            + ("" if example_voice else ", or pass --example-voice to start with the example")
        )
    default = settings.default_voice or _first_voice(names, prefer_own=example_voice)
    if default not in names:
        raise ServeError(f"--default-voice {default!r} not found; available: {', '.join(names)}")
    _LOGGER.info("Voices: %s (default %s)", ", ".join(names), default)
    return registry, default


def _first_voice(names: list[str], *, prefer_own: bool) -> str:
    """The first voice by name; with ``prefer_own``, the first that is not the example."""
    own = [name for name in names if name != EXAMPLE_VOICE] if prefer_own else []
    return (own or names)[0]


def _seed_example_voice(voices_dir: Path) -> VoiceRegistry:
    """Copy the bundled example voice into ``voices_dir`` (else serve it from the package)."""
    source = EXAMPLE_VOICES_DIR / EXAMPLE_VOICE
    try:
        # copyfile, not copy2: the copy must stay writable even from a read-only install.
        shutil.copytree(
            source, voices_dir / EXAMPLE_VOICE, copy_function=shutil.copyfile, dirs_exist_ok=True
        )
        registry = VoiceRegistry(voices_dir)
    except OSError as err:
        _LOGGER.warning(
            "Cannot copy the example voice into %s (%s); serving it from %s, so voices "
            "enrolled there appear only after a restart",
            voices_dir,
            err,
            EXAMPLE_VOICES_DIR,
        )
        registry = VoiceRegistry(EXAMPLE_VOICES_DIR)
    registry.scan()
    _LOGGER.warning(
        "No voice enrolled in %s yet: serving the example voice %r (a public-domain LibriVox "
        "reading). To add your own, record about a minute of speech and run "
        "`wyoming-sovits voice add NAME --audio RECORDING.flac --language en_US "
        "--preview clip.wav --voices-dir %s` (README, 'Enrolling a household voice'), then "
        "reload the Wyoming Protocol integration; after a restart your voice is the default",
        voices_dir,
        EXAMPLE_VOICE,
        voices_dir,
    )
    return registry


def _with_default_voice(settings: ServerSettings, name: str) -> ServerSettings:
    return dataclasses.replace(settings, default_voice=name)


def load_backend(
    spec: str | None, settings: ServerSettings, *, data_dir: Path | None = None
) -> SynthesisBackend:
    """The GPT-SoVITS pipeline, or ``module:factory`` (developer flag ``--backend``).

    ``data_dir``: the folder ``_data_dir_with_weights`` chose (found again when omitted).
    """
    if spec:
        factory = _load_factory(spec)
        backend: SynthesisBackend = factory(settings)
        return backend
    try:
        from ..pipeline import Pipeline  # heavy: torch and the models
    except ImportError as err:
        raise ServeError(
            f"The synthesis pipeline cannot be imported ({err}); "
            "install the package with its dependencies (torch, …)"
        ) from err
    if data_dir is None:
        data_dir = _data_dir_with_weights(settings)
    models_dir = data_dir / "models"
    _LOGGER.info(
        "Loading %s models from %s (device %s, dtype %s)",
        settings.model_version,
        models_dir,
        settings.device,
        settings.dtype,
    )
    try:
        pipeline: SynthesisBackend = Pipeline.load(
            models_dir,
            settings.device,
            settings.dtype,
            version=settings.model_version,
            cache_dir=data_dir / "cache",
            gpt_kernels=settings.gpt_kernels,
            max_streams=settings.max_streams,
            sovits_compile=settings.sovits_compile,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ServeError(f"Loading the models from {models_dir} failed: {err}") from err
    return pipeline


def _data_dir_with_weights(settings: ServerSettings) -> Path:
    """The first data dir holding the chosen weight set; with --download, fetch it first."""
    from ..download import DownloadError, download_weights, missing_files

    for data_dir in settings.data_dirs:
        if not missing_files(data_dir / "models", settings.model_version):
            return data_dir
    target = settings.data_dirs[0]
    if not settings.download:
        return target  # the pipeline names the missing files
    _LOGGER.info("Downloading %s weights into %s", settings.model_version, target / "models")
    try:
        download_weights(target / "models", settings.model_version, progress=_LOGGER.info)
    except DownloadError as err:
        raise ServeError(str(err)) from err
    return target


def _load_factory(spec: str) -> Any:
    """``module:factory`` or ``path/to/file.py:factory`` (``factory`` defaults to ``make``)."""
    target, _, attr = spec.rpartition(":") if ":" in spec else (spec, "", "make")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # dataclasses look their module up here
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr or "make")
    except (ImportError, AttributeError, OSError) as err:
        raise ServeError(f"--backend {spec!r}: cannot load the factory ({err})") from err


async def serve(settings: ServerSettings, engine: Engine, registry: VoiceRegistry) -> None:
    """Listen on ``settings.uri`` until SIGTERM (handled by the wyoming server) or EOF."""
    server = AsyncServer.from_uri(settings.uri)
    handler_factory = functools.partial(
        SovitsEventHandler, engine=engine, registry=registry, settings=settings
    )
    zeroconf = await _announce(settings) if settings.zeroconf else None
    _LOGGER.info("Ready on %s", settings.uri)
    try:
        await server.run(handler_factory)
    finally:
        if zeroconf is not None:
            await zeroconf.async_close()
    _LOGGER.info("Stopped")


async def _announce(settings: ServerSettings) -> Any:
    """Register ``_wyoming._tcp`` over mDNS with the LAN address (never 0.0.0.0)."""
    parsed = urlparse(settings.uri)
    if parsed.scheme != "tcp" or parsed.port is None:
        _LOGGER.warning("--zeroconf needs a tcp:// URI; not announcing %s", settings.uri)
        return None
    try:
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ImportError:
        _LOGGER.error("--zeroconf needs the zeroconf package (pip install zeroconf)")
        return None
    host = parsed.hostname
    if not host or host in ("0.0.0.0", "::"):
        try:
            host = _lan_address()
        except OSError as err:
            _LOGGER.error("Cannot find the LAN address for zeroconf (%s); not announcing", err)
            return None
    name = settings.zeroconf_name or f"sovits-{uuid.getnode():012x}"
    info = AsyncServiceInfo(
        "_wyoming._tcp.local.",
        f"{name}._wyoming._tcp.local.",
        addresses=[socket.inet_aton(host)],
        port=parsed.port,
    )
    zeroconf = AsyncZeroconf()
    await zeroconf.async_register_service(info)
    _LOGGER.info("Announced %s at %s:%s over zeroconf", name, host, parsed.port)
    return zeroconf


def _lan_address() -> str:
    """The address other hosts reach us at: the source of a (never sent) multicast route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((_MDNS_TARGET_IP, 1))
        address: str = sock.getsockname()[0]
    return address
