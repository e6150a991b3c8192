"""The GPU bench scripts stay runnable: the server bench's whole flow on tiny CPU models.

``bench/server_bench.py`` is run on a GPU with full-size models; here the same functions
drive the real server, engine and pipeline on the tiny models for one run per
configuration, so an API change that would break the bench fails CI instead of a
device session. ``bench/gpu_bench.py`` needs CUDA to run; importing it checks its imports.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
from tiny_frontends import make_tiny_models_dir

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def server_bench() -> object:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("server_bench")
    finally:
        sys.path.remove(str(BENCH))


def test_server_bench_flow_on_tiny_models(server_bench: object, tmp_path: Path) -> None:
    bench = server_bench
    models = make_tiny_models_dir(tmp_path / "models")
    variants = [("eager", False, "torch"), ("runner", True, "torch")]
    bench.run_variants(models, tmp_path, "cpu", "float32", variants, tokens=16, runs=1)  # type: ignore[attr-defined]
    rows = {measure: value for measure, value, _ in bench.ROWS}  # type: ignore[attr-defined]
    for name, _, _ in variants:
        for flow in ("streaming", "synthesize-start/chunk/stop", "no partial audio"):
            first = rows[f"{name}, {flow}: first audio p50"]
            assert first.endswith(" ms") and float(first.removesuffix(" ms")) > 0
            assert float(rows[f"{name}, {flow}: whole-utterance RTF"]) > 0


def test_server_bench_concurrency_on_tiny_models(server_bench: object, tmp_path: Path) -> None:
    bench = server_bench
    models = make_tiny_models_dir(tmp_path / "models")
    bench.measure_concurrent(models, tmp_path, "cpu", "float32", 3, tokens=16)  # type: ignore[attr-defined]
    rows = {measure: value for measure, value, _ in bench.ROWS}  # type: ignore[attr-defined]
    assert rows["3 streams batched (torch): aggregate"].endswith("x real time")
    assert float(rows["3 streams batched (torch): slowest stream"].split("x")[0]) > 0
    # the clients in the server's own process, as the bench ran them before
    bench.measure_concurrent(models, tmp_path, "cpu", "float32", 2, tokens=16, client_processes=0)  # type: ignore[attr-defined]
    rows = {measure: value for measure, value, _ in bench.ROWS}  # type: ignore[attr-defined]
    assert rows["2 streams batched (torch) [clients in-process]: aggregate"].endswith("x real time")


@pytest.mark.parametrize("ab", ["abgc", "abprefill"])
def test_server_bench_ab_rounds_on_tiny_models(
    server_bench: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ab: str
) -> None:
    """The A/B modes switch a warm pipeline each way and report every way's rounds (their
    aggregate, first audio and time in the garbage collector)."""
    import gc

    bench = server_bench
    monkeypatch.setattr(bench, "AB_PAIRS", 1)
    models = make_tiny_models_dir(tmp_path / "models")
    bench.measure_concurrent(models, tmp_path, "cpu", "float32", 2, tokens=16, ab=ab)  # type: ignore[attr-defined]
    rows = {measure: note for measure, _, note in bench.ROWS}  # type: ignore[attr-defined]
    names = bench.AB_SWITCHES[ab][1]  # type: ignore[attr-defined]
    for name in names:
        assert "GC ms (longest)" in rows[f"2 streams batched (torch): A/B {name}"]
    gc.unfreeze()


def test_gpu_bench_imports() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        module = importlib.import_module("gpu_bench")
    finally:
        sys.path.remove(str(BENCH))
    assert callable(module.main)
