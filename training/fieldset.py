"""The field test set: photographed and drawn digits that are not MNIST, and images of no digit.

    python -m training.fieldset --out data/field [--count 1500] [--seed 0] [--workers 2]

writes `<out>/{train,heldout}/<scene or kind>/<index>.{png,jpg}` and one `manifest.jsonl` per
split (one JSON object per file: file, split, source, scene, kind, label, width, height,
format, bytes). Digits come from the split's own glyph sources (training.glyphs: the train and
held-out sources are disjoint), every source and every digit in turn, photographed in every
scene (training.scenes); the negatives are blank paper in every scene, sensor noise, textures,
letters, symbols and scribbles. The same seed gives the same files, whatever the worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training import glyphs, scenes

# Digit images per scene, relative to the others: 12-megapixel photos are slow to make and to
# store, so they are few; the rest share the set equally.
SCENE_WEIGHTS = {scene: (0.15 if scene == "phone_12mp" else 1.0) for scene in scenes.SCENES}
# Negatives by kind, as shares of the negative count (blank paper is split over every scene).
NEGATIVE_SHARES = {
    "blank": 0.25,
    "noise": 0.12,
    "texture": 0.15,
    "letter": 0.18,
    "symbol": 0.14,
    "scribble": 0.16,
}
NEGATIVES_PER_DIGIT = 400 / 1500
GLYPH_SIDE = 96  # glyphs are rendered at this side, then scaled onto the photo
_SPLIT_IDS = {split: i for i, split in enumerate(glyphs.SPLITS)}


@dataclass(frozen=True)
class Item:
    """One image to make: what it shows and how. `source` is None for noise, texture, blank."""

    index: int
    split: str
    kind: str  # "digit" or a negative kind
    scene: str | None
    source: str | None
    label: int | None


def _shares(total: int, weights: dict[str, float], minimum: int = 1) -> dict[str, int]:
    """`total` split by weight (largest remainders get the rounding), each at least `minimum`."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return {k: max(minimum, n) for k, n in counts.items()}


def plan(split: str, count: int, seed: int) -> list[Item]:
    """Every image of a split, in file order: digits then negatives, shuffled within each."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 0])
    sources = [s.name for s in glyphs.sources(split)]
    items: list[tuple[str, str | None, str | None, int | None]] = []
    per_scene = _shares(count, SCENE_WEIGHTS)
    n_digits = sum(per_scene.values())
    # Every source and every digit in turn; the source list is offset per digit cycle so that
    # each source meets every digit over the set.
    order = rng.permutation(n_digits)
    slot = 0
    for scene, n in per_scene.items():
        for _ in range(n):
            k = int(order[slot])
            slot += 1
            source = sources[(k + k // len(sources)) % len(sources)]
            items.append(("digit", scene, source, k % 10))
    negatives = _shares(round(count * NEGATIVES_PER_DIGIT), NEGATIVE_SHARES)
    negatives["blank"] = max(negatives["blank"], len(scenes.SCENES))  # blank paper in every scene
    photo_scenes = [s for s in scenes.SCENES if s != "phone_12mp"]
    for kind, n in negatives.items():
        for i in range(n):
            if kind == "blank":
                items.append((kind, scenes.SCENES[i % len(scenes.SCENES)], None, None))
            elif kind in ("noise", "texture"):
                items.append((kind, None, None, None))
            else:
                scene = photo_scenes[int(rng.integers(len(photo_scenes)))]
                items.append((kind, scene, None, None))
    return [
        Item(i, split, kind, scene, source, label)
        for i, (kind, scene, source, label) in enumerate(items)
    ]


def _suffix(fmt: str) -> str:
    return ".jpg" if fmt == "JPEG" else ".png"


def make(item: Item, seed: int, out: Path, max_side: int | None) -> dict[str, object]:
    """Render, photograph and write one item; its manifest row."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[item.split], 1, item.index])
    if item.kind == "digit":
        assert item.source is not None
        assert item.label is not None
        assert item.scene is not None
        source = next(s for s in glyphs.sources(item.split) if s.name == item.source)
        ink = glyphs.render_digit(source, item.label, rng, size=GLYPH_SIDE)
        photo = scenes.photograph(ink, item.scene, rng, max_side=max_side)
    elif item.kind == "blank":
        assert item.scene is not None
        photo = scenes.photograph(
            np.zeros((GLYPH_SIDE, GLYPH_SIDE), np.float32), item.scene, rng, max_side=max_side
        )
    elif item.kind == "noise":
        photo = scenes.noise_image(rng, max_side)
    elif item.kind == "texture":
        photo = scenes.texture_image(rng, max_side)
    else:
        assert item.scene is not None
        ink = glyphs.render_negative(item.kind, item.split, rng, size=GLYPH_SIDE)
        photo = scenes.photograph(ink, item.scene, rng, max_side=max_side)
    folder = item.scene if item.kind == "digit" else item.kind
    rel = f"{folder}/{item.index:05d}{_suffix(photo.format)}"
    path = out / item.split / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(photo.data)
    row = asdict(item)
    del row["index"]
    return {
        "file": rel,
        **row,
        "width": photo.width,
        "height": photo.height,
        "format": photo.format,
        "bytes": len(photo.data),
    }


def _make_star(args: tuple[Item, int, Path, int | None]) -> dict[str, object]:
    return make(*args)


def write_split(
    split: str, out: Path, count: int, seed: int, workers: int, max_side: int | None
) -> int:
    """Write one split's files and manifest; the number of files."""
    items = plan(split, count, seed)
    folder = out / split
    if (folder / "manifest.jsonl").is_file():
        shutil.rmtree(folder)  # a set made before: no stale files beside the new manifest
    jobs = [(item, seed, out, max_side) for item in items]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(_make_star, jobs, chunksize=16))
    else:
        rows = [_make_star(job) for job in jobs]
    manifest = out / split / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    return len(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training.fieldset", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--out", type=Path, default=Path("data/field"), help="output folder (default: data/field)"
    )
    p.add_argument(
        "--count",
        type=int,
        default=1500,
        help="digit images per split (default: 1500); negatives are 400/1500 of it",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the whole set (default: 0)")
    p.add_argument(
        "--split",
        choices=[*glyphs.SPLITS, "both"],
        default="both",
        help="which split to write (default: both)",
    )
    p.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default: 2)"
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="cap every image's longer side (the committed sample; default: none)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    splits = glyphs.SPLITS if args.split == "both" else (args.split,)
    for split in splits:
        glyphs.sources(split)  # fail now, naming the font package, not inside a worker
    for split in splits:
        n = write_split(split, args.out, args.count, args.seed, args.workers, args.max_side)
        print(f"{split}: {n} files in {args.out / split}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
