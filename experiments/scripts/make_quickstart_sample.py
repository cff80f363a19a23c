"""Rebuild the CoNLL-2003 sample that ships inside openie for ``openie quickstart`` (``conll2003_sample``).

A seeded sample of whole sentences, kept in corpus order, copied line for line from the corpus
in ``../shared/data/conll2003`` (CoNLL-2003 as redistributed with CrossNER, MIT licence):

    python experiments/scripts/make_quickstart_sample.py --train 3000 --dev 200
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "openie" / "corpora" / "conll2003_sample"


def sentences(path: Path) -> list[str]:
    blocks, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def sample(blocks: list[str], n: int, seed: int) -> list[str]:
    keep = sorted(random.Random(seed).sample(range(len(blocks)), min(n, len(blocks))))
    return [blocks[i] for i in keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2003)
    args = ap.parse_args()
    TARGET.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train), ("dev", args.dev)):
        chosen = sample(sentences(args.source / f"{split}.txt"), n, args.seed)
        (TARGET / f"{split}.txt").write_text("\n\n".join(chosen) + "\n", encoding="utf-8")
        print(f"{split}: {len(chosen)} sentences -> {TARGET / f'{split}.txt'}")


if __name__ == "__main__":
    main()
