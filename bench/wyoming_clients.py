"""Wyoming TTS clients, for ``server_bench.py``: in its process, or in processes of their own.

Home Assistant reads the server's audio in its own process, on its own machine. Clients in
the server's process would parse every ``audio-chunk`` under the server's GIL: at 64
streams that is ~17,000 events a round, which the server does not pay in real use. So the
concurrent rows run their clients here, as a child process (``serve_clients``)::

    python3 bench/wyoming_clients.py PORT

reads one JSON line (the texts, one client each), prints ``ready``, waits for a ``go``
line, runs every client at once and prints one JSON line: per client ``[start, first,
total, samples]`` (``start`` on ``time.perf_counter``, which on Linux is the system's
monotonic clock, so the parent can compare it; the rest are seconds after it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

VOICE = "austen"


async def first_and_last(
    port: int, streaming_flow: bool, text: str, voice: str = VOICE
) -> tuple[float, float, int]:
    """(seconds to first audio-chunk, seconds to the end, samples received)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        synth_voice = SynthesizeVoice(name=voice)
        start = time.perf_counter()
        if streaming_flow:
            await client.write_event(SynthesizeStart(voice=synth_voice).event())
            await client.write_event(SynthesizeChunk(text=text).event())
            await client.write_event(SynthesizeStop().event())
            end_type = "synthesize-stopped"
        else:
            await client.write_event(Synthesize(text=text, voice=synth_voice).event())
            end_type = "audio-stop"
        first, samples = 0.0, 0
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("server closed the connection")
            if AudioChunk.is_type(event.type):
                if not samples:
                    first = time.perf_counter() - start
                samples += len(AudioChunk.from_event(event).audio) // 2
            elif event.type == "error":
                raise RuntimeError(event.data)
            elif event.type == end_type:
                return first, time.perf_counter() - start, samples


async def timed_client(port: int, text: str) -> list[float]:
    """One client's ``[start, first, total, samples]``."""
    start = time.perf_counter()
    first, total, samples = await first_and_last(port, False, text)
    return [start, first, total, float(samples)]


async def _main(port: int) -> None:
    loop = asyncio.get_running_loop()
    texts = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    print("ready", flush=True)
    if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
        return
    timed = await asyncio.gather(*(timed_client(port, text) for text in texts))
    print(json.dumps(timed), flush=True)


async def serve_clients(port: int, texts: list[str], processes: int) -> list[list[float]]:
    """Run one client per text in ``processes`` child processes, all released at once;
    returns each client's ``[start, first, total, samples]``, in the order of ``texts``."""
    shares = [texts[k::processes] for k in range(processes) if texts[k::processes]]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            str(port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in shares
    ]
    try:
        for child, share in zip(children, shares, strict=True):
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(share).encode() + b"\n")
            await child.stdin.drain()
        for child in children:
            assert child.stdout is not None
            if (await child.stdout.readline()).strip() != b"ready":
                raise RuntimeError("a client process did not start")
        for child in children:  # released together: the round starts here
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        results = []
        for child in children:
            assert child.stdout is not None
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError(f"a client process failed (exit {await child.wait()})")
            results.append(json.loads(line))
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
            await child.wait()
    timed: list[list[float]] = [[] for _ in texts]
    for k, share in enumerate(results):
        for j, result in enumerate(share):
            timed[k + j * processes] = result
    return timed


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
