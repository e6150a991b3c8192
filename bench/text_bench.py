"""Per-sentence time of ``to_phones`` after warm-up (target: under 1.5 ms).

The same sentence is converted again and again, so the per-word caches of the frontend
are warm; a sentence never seen before costs more (new words go through jieba's HMM,
pypinyin and the language detector).

Run from the repository root: ``PYTHONPATH=. python bench/text_bench.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from wyoming_sovits.text import to_phones

SENTENCES = {
    "en (20 words)": (
        "en",
        "The living room lights are now on and the thermostat is set to twenty one "
        "degrees for the evening.",
    ),
    "zh (20 chars)": ("zh", "客厅的灯已经打开了，空调温度设置为二十六度。"),
    "mixed (auto)": ("auto", "帮我打开Apple Music，播放Taylor Swift的新歌。"),
    "zh numbers": ("zh", "3月15日下午3:30，气温25.5℃，湿度60%，电量还剩2格。"),
    "en numbers": ("en", "On 12/25/2024 at 7:30 pm it was -3°C, and 3 kWh cost $1.26."),
}


def _time_ms(text: str, language: str, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        to_phones(text, language)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    for name, (language, text) in SENTENCES.items():
        _time_ms(text, language, 3)  # warm-up: dictionaries and models load here
        times = _time_ms(text, language, args.repeat)
        print(f"{name:15s} median {statistics.median(times):6.2f} ms  max {max(times):6.2f} ms")


if __name__ == "__main__":
    main()
