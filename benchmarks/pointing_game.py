"""The pointing game for the text route's GradCAM (docs/methods.md §1.1): on held-out questions that name exactly
one object, does the peak of the question's GradCAM map, computed as the engine computes it
(`RegionCaptioner.gradcam`), lie inside that object?

    vqagraph world split test -o data/test
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/pointing_game.py data/test/questions.jsonl [--profile shapes]

Questions with marks, `knowledge` questions and questions naming zero or several objects are skipped. The
object's visible mask is mapped into the patch grid's frame (centred on a square of side max(W, H) when the
profile's encoder letterboxes, otherwise stretched to the square) and averaged into grid cells. `hit`: the
peak cell holds some of the object; `hit≥25%`: at least a quarter of the peak cell is the object; `chance`: the
share of cells holding some of the object (what a peak dropped at random would score). Misses say where the
peak fell: on another object, on the background, or on the letterbox padding.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vqagraph.config import load_profile
from vqagraph.media import load_image
from vqagraph.toolkit import Toolkit
from vqagraph.tools.gradcam import patch_grid
from vqagraph.world import Scene, load_scene, visible_masks

SIZES = ("large", "medium", "small", "tiny")


def cell_coverage(mask: np.ndarray, grid: tuple[int, int], letterboxed: bool) -> np.ndarray:
    """The share of each grid cell (rows × cols) that `mask` (H×W bool, the image's pixels) covers."""
    if letterboxed:
        height, width = mask.shape
        side = max(height, width)
        square = np.zeros((side, side), dtype=bool)
        top, left = (side - height) // 2, (side - width) // 2
        square[top : top + height, left : left + width] = mask
        mask = square
    rows, cols = grid
    cells = Image.fromarray(mask.astype(np.float32), mode="F").resize((cols, rows), Image.Resampling.BOX)
    return np.asarray(cells, dtype=np.float64)


def peak_falls_on(scene: Scene, masks: list[np.ndarray], target: int, cell: tuple[int, int],
                  grid: tuple[int, int], letterboxed: bool) -> str:
    """Where a missed peak lies: the object covering most of the peak cell, else background or padding."""
    covers = {i: cell_coverage(m, grid, letterboxed)[cell] for i, m in enumerate(masks) if i != target}
    best = max(covers, key=covers.__getitem__, default=None)
    if best is not None and covers[best] > 0:
        obj = scene.objects[best]
        return f"another object ({obj.size_word})"
    image = cell_coverage(np.ones((scene.height, scene.width), dtype=bool), grid, letterboxed)[cell]
    return "background" if image > 0 else "letterbox padding"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a split's questions.jsonl (`vqagraph world split test -o DIR`)")
    parser.add_argument("--profile", default="shapes", help="a profile name or TOML file (default shapes)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many questions")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of the table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("marks") and r.get("family") != "knowledge" and r.get("scene")
            and len(r.get("object_ids") or []) == 1][: args.limit]
    tools = Toolkit(load_profile(args.profile))
    letterboxed = tools.matcher.vision is not None and tools.matcher.vision.letterboxed
    scenes: dict[Path, tuple[Scene, list[np.ndarray]]] = {}
    groups: dict[str, list[tuple[bool, bool, float]]] = defaultdict(list)
    misses: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for n, row in enumerate(rows, 1):
        image_path, scene_path = args.data.parent / row["image"], args.data.parent / row["scene"]
        if scene_path not in scenes:
            scene = load_scene(scene_path)
            scenes[scene_path] = scene, visible_masks(scene)
        scene, masks = scenes[scene_path]
        target = row["object_ids"][0]
        probs, _, _ = tools.region_captioner.gradcam(str(image_path), load_image(image_path), row["question"])
        grid = patch_grid(len(probs))
        cover = cell_coverage(masks[target], grid, letterboxed)
        cell = divmod(int(probs.argmax()), grid[1])
        result = (bool(cover[cell] > 0), bool(cover[cell] >= 0.25), float((cover > 0).mean()))
        size = scene.objects[target].size_word
        for key in ("overall", f"size: {size}", f"family: {row['family']}"):
            groups[key].append(result)
        if not result[0]:
            where = peak_falls_on(scene, masks, target, cell, grid, letterboxed)
            misses[where] += 1
            examples.append({"question": row["question"], "image": row["image"], "size": size,
                             "peak_cell": list(cell), "falls_on": where})
        if n % 25 == 0 and not args.json:
            print(f"  {n}/{len(rows)}", flush=True)

    order = ["overall"] + [f"size: {s}" for s in SIZES] + sorted(k for k in groups if k.startswith("family"))
    report = {k: {"n": len(groups[k]), "hit": 100 * float(np.mean([r[0] for r in groups[k]])),
                  "hit_25": 100 * float(np.mean([r[1] for r in groups[k]])),
                  "chance": 100 * float(np.mean([r[2] for r in groups[k]]))} for k in order if groups[k]}
    if args.json:
        print(json.dumps({"profile": str(args.profile), "letterboxed": letterboxed, "questions": len(rows),
                          "groups": report, "misses": dict(misses), "miss_examples": examples}, indent=2))
        return 0
    print(f"\n## Pointing game, profile {args.profile} ({len(rows)} questions, "
          f"{'letterboxed' if letterboxed else 'stretched'} grid)\n")
    print("| group | n | hit % | hit≥25% % | chance % |\n|---|---:|---:|---:|---:|")
    for key, r in report.items():
        print(f"| {key} | {r['n']} | {r['hit']:.1f} | {r['hit_25']:.1f} | {r['chance']:.1f} |")
    print("\nmisses: " + (", ".join(f"{w} {c}" for w, c in misses.most_common()) or "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
