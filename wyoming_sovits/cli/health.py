"""``wyoming-sovits health``: a real describe → info round trip (for Docker HEALTHCHECK).

Exit status 0 when the server answers with an installed TTS program, 1 otherwise; one
line on stdout says why.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info

DEFAULT_URI = "tcp://127.0.0.1:10200"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "health",
        help="check that a server answers describe with an installed TTS program",
        description="Exit 0 if the Wyoming server at --uri offers an installed TTS program.",
    )
    parser.add_argument("--uri", default=DEFAULT_URI, help="tcp://HOST:PORT or unix://PATH")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds for the whole check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    healthy, reason = asyncio.run(check_health(args.uri, args.timeout))
    print(("OK: " if healthy else "UNHEALTHY: ") + reason, flush=True)
    return 0 if healthy else 1


async def check_health(uri: str, timeout: float) -> tuple[bool, str]:
    """``(healthy, one-line reason)`` for the server at ``uri``."""
    try:
        info = await asyncio.wait_for(_describe(uri), timeout)
    except TimeoutError:
        return False, f"no info from {uri} within {timeout:g} s"
    except (OSError, ValueError) as err:
        return False, f"cannot talk to {uri}: {err}"
    if info is None:
        return False, f"{uri} closed the connection without sending info"
    programs = [program for program in info.tts if program.installed]
    if not programs:
        return False, f"{uri} offers no installed TTS program"
    program = programs[0]
    voices = [voice.name for voice in program.voices if voice.installed]
    return (
        True,
        f"{program.name} {program.version or ''} at {uri}, voices: {', '.join(voices) or 'none'}",
    )


async def _describe(uri: str) -> Info | None:
    async with AsyncClient.from_uri(uri) as client:
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            if event is None:
                return None
            if Info.is_type(event.type):
                return Info.from_event(event)
