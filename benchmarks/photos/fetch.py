"""The real-photo dev set: photographs that ship inside Debian packages, with questions written here.

`sources.json` names each photo's package, pinned version, path inside the package, sha256 and licence;
`questions.jsonl` holds the questions and their acceptable answers (families: object, colour, text, yes/no,
count), written by hand while looking at the photos. This script fetches each package once with `apt-get download`
(no root, no dependencies; a copy already in /var/cache/apt/archives is used as is), takes only the listed files out
of it, checks their sha256 and writes `OUT/images/` and `OUT/questions.jsonl`, which `vqagraph eval` reads:

    python benchmarks/photos/fetch.py --out data/photos
    vqagraph eval data/photos/questions.jsonl --routes auto --answers photos.jsonl

The held-back set (the sample photographs inside the scikit-image and scikit-learn wheels) is never used here: a
source path under either package is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELD_BACK = ("skimage", "sklearn", "scikit-image", "scikit-learn")


def package_file(package: str, version: str, folder: Path) -> Path:
    """The .deb of exactly this version: the apt cache's copy, else `apt-get download` into `folder`."""
    quoted = version.replace(":", "%3a")
    cached = Path("/var/cache/apt/archives") / f"{package}_{quoted}_all.deb"
    if cached.is_file():
        return cached
    subprocess.run(["apt-get", "download", "-q", f"{package}={version}"], cwd=folder, check=True,
                   capture_output=True, text=True)
    (found,) = folder.glob(f"{package}_*.deb")
    return found


def extract(deb: Path, wanted: dict[str, Path]) -> None:
    """Copy the package's files at the `wanted` paths (absolute, as installed) to their destinations."""
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    left = dict(wanted)
    with tarfile.open(fileobj=tar.stdout, mode="r|") as archive:
        for member in archive:
            target = left.pop("/" + member.name.removeprefix("./"), None)
            if target is not None and member.isfile():
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
    tar.wait()
    if left:
        raise SystemExit(f"{deb.name}: not found inside: {', '.join(left)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for images/ and questions.jsonl")
    args = parser.parse_args()
    sources = json.loads((HERE / "sources.json").read_text())
    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    by_package: dict[tuple[str, str], dict[str, Path]] = {}
    for photo in sources:
        if any(word in photo["package"] or word in photo["path"] for word in HELD_BACK):
            raise SystemExit(f"{photo['name']}: the scikit-image and scikit-learn photographs are held back")
        target = images / photo["name"]
        if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == photo["sha256"]):
            by_package.setdefault((photo["package"], photo["version"]), {})[photo["path"]] = target
    with tempfile.TemporaryDirectory() as folder:
        for (package, version), wanted in by_package.items():
            print(f"{package} {version}: {len(wanted)} photo(s)", file=sys.stderr)
            deb = package_file(package, version, Path(folder))
            extract(deb, wanted)
            if deb.parent == Path(folder):
                deb.unlink()  # one package on disk at a time
    for photo in sources:
        digest = hashlib.sha256((images / photo["name"]).read_bytes()).hexdigest()
        if digest != photo["sha256"]:
            raise SystemExit(f"{photo['name']}: sha256 {digest}, expected {photo['sha256']}")
    shutil.copyfile(HERE / "questions.jsonl", args.out / "questions.jsonl")
    questions = (HERE / "questions.jsonl").read_text().splitlines()
    print(f"{len(sources)} photos and {len(questions)} questions in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
