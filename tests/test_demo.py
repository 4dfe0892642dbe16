"""The demo: bundled corpus, the skip-gram step, and a short dense-vs-rewritten run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytensor
import pytest

from subsetgrad import demo

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result() -> demo.DemoResult:
    return demo.run_demo(steps=12, batch=64, seed=3)


def _make_corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_corpus", ROOT / "scripts" / "make_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_dense_zipf_ids() -> None:
    tokens = demo.load_corpus()
    counts = np.bincount(tokens)
    assert 100_000 <= len(tokens) <= 1_000_000
    assert 10_000 <= len(counts) < 2**16
    assert counts.min() >= 1, "every id below V occurs"
    assert np.all(np.diff(counts) <= 0), "ids are numbered by frequency"
    assert counts[0] > 100 * counts[len(counts) // 2], "heavy-tailed"


def test_corpus_file_is_small() -> None:
    assert (ROOT / "src" / "subsetgrad" / "data" / demo.CORPUS).stat().st_size < 300 * 1024


def test_make_corpus_regenerates_the_bundled_file() -> None:
    make_corpus = _make_corpus()
    np.testing.assert_array_equal(make_corpus.make_tokens(), demo.load_corpus())
    assert make_corpus.main(["--check"]) == 0


def test_batches_are_deterministic_and_in_range() -> None:
    tokens = demo.load_corpus()
    vocab = int(tokens.max()) + 1
    a = demo.sample_batches(tokens, vocab, 3, 16, np.random.default_rng(7))
    b = demo.sample_batches(tokens, vocab, 3, 16, np.random.default_rng(7))
    assert a.centre.shape == a.context.shape == (3, 16)
    assert a.negatives.shape == (3, 16, demo.NEGATIVES)
    for x, y in zip(
        (a.centre, a.context, a.negatives), (b.centre, b.context, b.negatives), strict=True
    ):
        assert x.dtype == np.int32
        assert x.min() >= 0 and x.max() < vocab
        np.testing.assert_array_equal(x, y)


def test_step_keeps_float32() -> None:
    tables = [pytensor.shared(np.zeros((10, 4), dtype="float32")) for _ in range(2)]
    _, loss, updates = demo.build_step(tables[0], tables[1], 0.5)
    assert loss.type.dtype == "float32"
    assert [u.type.dtype for u in updates.values()] == ["float32", "float32"]


def test_rewrite_fires_only_in_the_rewritten_compile(result: demo.DemoResult) -> None:
    # Both tables: the centre table (one lookup) and the context table (two).
    assert result.fired == (0, 2)
    assert result.scatters == 3


def test_runs_agree_and_learn(result: demo.DemoResult) -> None:
    assert all(t.dtype == np.float32 for t in (*result.dense.tables, *result.rewritten.tables))
    assert max(result.max_diff) < 1e-6
    np.testing.assert_allclose(result.dense.losses, result.rewritten.losses, rtol=1e-5)
    # Starts at (1 + K) log 2, since the context table starts at zero, then falls.
    assert result.dense.losses[0] == pytest.approx((1 + demo.NEGATIVES) * np.log(2), rel=1e-4)
    assert result.dense.losses[-1] < result.dense.losses[0]


def test_report(result: demo.DemoResult) -> None:
    report = demo.format_report(result)
    assert f"V = {result.vocab:,}" in report
    assert "B = 64 pairs/step, 12 steps" in report
    assert "ms/step" in report and "speed-up" in report and "max |diff|" in report
    assert "fired: 2 table updates (3 scatters)" in report
    assert result.speedup > 0 and result.dense.ms_per_step(result.warmup) > 0


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown PyTensor mode"):
        demo.run_demo(steps=1, batch=1, mode="NO_SUCH_MODE")
