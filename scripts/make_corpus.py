"""Regenerate the synthetic corpus bundled with ``subsetgrad demo``.

The corpus is a sequence of word ids drawn independently from a Zipf law
(``p(k) ~ 1 / k**EXPONENT`` over ``WORDS`` word types) with a fixed seed. Ids
are then renumbered by frequency, most frequent first, so the words that occur
are exactly ``0 .. V-1``. It is stored as little-endian uint16 ids, xz-compressed.

    python scripts/make_corpus.py            # rewrite the bundled file
    python scripts/make_corpus.py --check    # exit 1 unless the bundled file matches
"""

from __future__ import annotations

import argparse
import lzma
import sys
from pathlib import Path

import numpy as np

SEED = 20240611
WORDS = 50_000
EXPONENT = 1.1
TOKENS = 220_000
OUT = Path(__file__).resolve().parent.parent / "src" / "subsetgrad" / "data" / "corpus.u16.xz"


def make_tokens(
    seed: int = SEED, words: int = WORDS, exponent: float = EXPONENT, tokens: int = TOKENS
) -> np.ndarray:
    """The corpus as uint16 word ids, renumbered by frequency rank."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, words + 1) ** exponent)
    cdf /= cdf[-1]
    # Inverse-CDF sampling from uniform draws: only Generator.random's stream
    # matters, which NumPy keeps stable, unlike the internals of choice().
    ids = np.minimum(np.searchsorted(cdf, rng.random(tokens), side="right"), words - 1)
    counts = np.bincount(ids, minlength=words)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(words, dtype=np.int64)
    rank[order] = np.arange(words)
    out = rank[ids]
    assert out.max() < 2**16
    return out.astype("<u2")


def encode(tokens: np.ndarray) -> bytes:
    """The file contents for `tokens`."""
    return lzma.compress(tokens.astype("<u2").tobytes(), preset=9 | lzma.PRESET_EXTREME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: bundled)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    tokens = make_tokens()
    if args.check:
        stored = np.frombuffer(lzma.decompress(args.out.read_bytes()), dtype="<u2")
        same = np.array_equal(stored, tokens)
        print(f"{args.out.name}: {'matches' if same else 'DIFFERS from'} the generator")
        return 0 if same else 1
    data = encode(tokens)
    args.out.write_bytes(data)
    vocab = int(tokens.max()) + 1
    print(f"wrote {args.out.name}: {tokens.size:,} tokens, {vocab:,} words, {len(data):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
