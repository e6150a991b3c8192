"""``wyoming-sovits doctor``: what a user needs to debug a set-up, in one printout."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import socket
from pathlib import Path

from .. import __version__

_PACKAGES = (
    "torch",
    "triton",
    "transformers",
    "wyoming",
    "numpy",
    "soundfile",
    "pyopenjtalk",
    "pypinyin",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="print versions, device, installed weights and voices, port state"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--voices-dir", type=Path, default=Path("voices"))
    parser.add_argument("--port", type=int, default=10200)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when a weight set and at least one voice are usable, 1 otherwise."""
    print(
        f"wyoming-sovits {__version__} on Python {platform.python_version()} ({platform.platform()})"
    )
    for name in _PACKAGES:
        print(f"  {name:13s} {_version(name)}")
    _print_device()
    weights_ok = _print_weights(args.data_dir / "models")
    voices_ok = _print_voices(args.voices_dir)
    _print_port(args.port)
    return 0 if weights_ok and voices_ok else 1


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _print_device() -> None:
    try:
        import torch
    except ImportError:
        print("device: torch is not installed")
        return
    if not torch.cuda.is_available():
        print(f"device: CPU only ({torch.get_num_threads()} threads); synthesis will be slow")
        return
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        print(f"device: cuda:{i} {props.name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
    from ..kernels import triton_available

    if triton_available():
        print("GPT kernels: triton (the default; --gpt-kernels torch to compare)")
    else:
        print("GPT kernels: torch (Triton is not installed; it ships with CUDA builds of torch)")


def _print_weights(models_dir: Path) -> bool:
    from ..download import WEIGHT_SETS, verify_file

    print(f"weights in {models_dir}:")
    usable = False
    for version, files in WEIGHT_SETS.items():
        problems = [(f.path, verify_file(models_dir, f)) for f in files]
        missing = [p for p, why in problems if why == "missing"]
        usable = usable or not missing
        state = "installed" if not missing else f"missing {len(missing)} of {len(files)} files"
        print(f"  {version:10s} {state}")
    if not usable:
        print("  -> run: wyoming-sovits models download")
    return usable


def _print_voices(voices_dir: Path) -> bool:
    from ..voices import VoiceRegistry

    registry = VoiceRegistry(voices_dir)
    registry.scan()
    names = registry.names()
    print(f"voices in {voices_dir}: {', '.join(names) if names else 'none'}")
    for path, problem in registry.errors.items():
        print(f"  broken: {path}: {problem}")
    if not names:
        print(
            "  -> enroll one: wyoming-sovits voice add NAME --audio RECORDING.flac"
            f" --language en_US --preview clip.wav --voices-dir {voices_dir}"
            " (README: 'Enrolling a household voice'); `serve --example-voice` starts"
            " with the bundled example voice meanwhile"
        )
    return bool(names)


def _print_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        busy = sock.connect_ex(("127.0.0.1", port)) == 0
    if busy:
        print(
            f"port {port}: in use (a server is running?); check: wyoming-sovits health --uri tcp://127.0.0.1:{port}"
        )
    else:
        print(f"port {port}: free")
    print(f"Home Assistant: Wyoming Protocol integration, host {_lan_address()}, port {port}")


def _lan_address() -> str:
    """The address other machines reach this one at (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"
