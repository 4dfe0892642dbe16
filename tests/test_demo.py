"""The demo: bundled corpus, the skip-gram step, and a short dense-vs-rewritten run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
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


# --------------------------------------------------------------------------- #
# ./dev demo: what it installs
# --------------------------------------------------------------------------- #
def test_the_demo_runs_without_the_test_extra() -> None:
    """`./dev demo` installs no extras: the demo loads no package the test extra names."""
    code = textwrap.dedent(
        """\
        import re, sys, tomllib
        from importlib.metadata import packages_distributions
        from subsetgrad.cli import main

        assert main(["demo", "--steps", "1", "--batch", "4"]) == 0
        norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
        pyproject = tomllib.loads(open(sys.argv[1], "rb").read().decode())
        extra = pyproject["project"]["optional-dependencies"]["test"]
        names = {norm(re.split(r"[^A-Za-z0-9._-]", r, maxsplit=1)[0]) for r in extra}
        owners = packages_distributions()
        loaded = {m.split(".")[0] for m in list(sys.modules)}
        print(sorted(m for m in loaded if {norm(d) for d in owners.get(m, ())} & names))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-1] == "[]"


FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$DEV_LOG"
"""
FAKE_SUBSETGRAD = """#!/usr/bin/env bash
echo "subsetgrad $*" >> "$DEV_LOG"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="./dev is a bash script")
def test_dev_installs_the_extras_each_job_needs_once(tmp_path: Path) -> None:
    """`./dev` with a stand-in venv whose python and subsetgrad log their arguments."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "dev", project / "dev")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, text in [("python", FAKE_PYTHON), ("subsetgrad", FAKE_SUBSETGRAD)]:
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "SUBSETGRAD_VENV": str(venv), "DEV_LOG": str(log)}

    def dev(*args: str) -> list[str]:
        """Run ./dev; the packages each `pip install -e` asked for, and what ran after."""
        log.write_text("")
        subprocess.run(["bash", str(project / "dev"), *args], env=env, check=True)
        calls = log.read_text().splitlines()
        specs = [c.split(" -e ", 1)[1] for c in calls if " pip install " in c and " -e " in c]
        return [*specs, calls[-1]]

    # No extras for the demo: a valid spec, not ".[]".
    assert dev("demo", "--help") == [".", "subsetgrad demo --help"]
    assert dev("demo") == ["subsetgrad demo"]
    # The test extra is installed when the tests run after the demo ...
    assert dev("test", "-q") == [".[test]", "python -m pytest -q"]
    assert dev("test") == ["python -m pytest"]
    # ... and is enough for the demo, as a superset of extras is for the tests.
    assert dev("demo") == ["subsetgrad demo"]
    assert dev("test-backends") == [".[test,backends]", "python -m pytest -m backends"]
    assert dev("test") == ["python -m pytest"]
    # A changed pyproject.toml reinstalls, with the extras the job needs.
    (project / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert dev("demo") == [".", "subsetgrad demo"]
    assert dev("test") == [".[test]", "python -m pytest"]
