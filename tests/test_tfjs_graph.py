"""A TF.js graph model run with torch ops (vqagraph/models/tfjs_graph.py), against TensorFlow's conventions written
out by hand, and the COCO detector it runs (vqagraph/models/centernet.py) against its own decoding."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqagraph.errors import ModelMismatchError
from vqagraph.models.tfjs_graph import TFJSGraphModel


def _attr_list(*values: int) -> dict[str, object]:
    return {"list": {"i": [str(v) for v in values]}}


def _text(value: str) -> dict[str, str]:
    return {"s": base64.b64encode(value.encode()).decode()}


def _graph(folder: Path, weights: dict[str, np.ndarray], nodes: list[dict[str, object]]) -> Path:
    """A graph-model folder: model.json and one shard, float weights stored float16-quantised as TF.js does."""
    manifest, shard = [], b""
    for name, array in weights.items():
        entry: dict[str, object] = {"name": name, "shape": list(array.shape), "dtype": str(array.dtype)}
        if array.dtype == np.float32:
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            shard += array.astype(np.float16).tobytes()
        else:
            shard += array.tobytes()
        manifest.append(entry)
    (folder / "group1-shard1of1.bin").write_bytes(shard)
    consts = [{"name": name, "op": "Const"} for name in weights]
    document = {"format": "graph-model", "modelTopology": {"node": [{"name": "x", "op": "Placeholder"}, *consts,
                                                                      *nodes]},
                "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": manifest}]}
    (folder / "model.json").write_text(json.dumps(document))
    return folder / "model.json"


def _same_conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """TF's Conv2D, NHWC, SAME: output ceil(size / stride), the padding's odd pixel after (bottom, right)."""
    _, height, width, _ = x.shape
    k = w.shape[0]
    out_h, out_w = math.ceil(height / stride), math.ceil(width / stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((1, out_h, out_w, w.shape[3]), dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[0, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[0, i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))
    return out


def _legacy_resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """TF's ResizeBilinear without align_corners or half-pixel centres: source = target × in / out."""
    _, h, w, _ = x.shape
    out = np.zeros((1, height, width, x.shape[3]))
    for i in range(height):
        for j in range(width):
            y, xx = i * h / height, j * w / width
            y0, x0 = math.floor(y), math.floor(xx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, xx - x0
            out[0, i, j] = ((1 - fy) * ((1 - fx) * x[0, y0, x0] + fx * x[0, y0, x1])
                            + fy * ((1 - fx) * x[0, y1, x0] + fx * x[0, y1, x1]))
    return out


def test_a_graph_runs_as_tensorflow_would(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    depthwise = rng.normal(size=(3, 3, 3, 1)).astype(np.float32)
    weights = {"w": w, "b": b, "dw": depthwise, "size": np.array([5, 7], dtype=np.int32),
               "axes": np.array([1, 2], dtype=np.int32), "axis": np.array(3, dtype=np.int32)}
    conv = {"name": "conv", "op": "_FusedConv2D", "input": ["x", "w", "b"],
            "attr": {"strides": _attr_list(1, 2, 2, 1), "padding": _text("SAME"),
                     "fused_ops": {"list": {"s": [_text("BiasAdd")["s"], _text("Relu6")["s"]]}}}}
    nodes = [conv,
             {"name": "dw_out", "op": "DepthwiseConv2dNative", "input": ["conv", "dw"],
              "attr": {"strides": _attr_list(1, 1, 1, 1), "padding": _text("SAME")}},
             {"name": "up", "op": "ResizeBilinear", "input": ["dw_out", "size"],
              "attr": {"align_corners": {"b": False}, "half_pixel_centers": {"b": False}}},
             {"name": "pool", "op": "MaxPool", "input": ["up"],
              "attr": {"ksize": _attr_list(1, 3, 3, 1), "strides": _attr_list(1, 1, 1, 1), "padding": _text("SAME")}},
             {"name": "mean", "op": "Mean", "input": ["pool", "axes"], "attr": {"keep_dims": {"b": True}}},
             {"name": "both", "op": "ConcatV2", "input": ["mean", "mean", "axis"]}]
    model = TFJSGraphModel(_graph(tmp_path, weights, nodes))
    x = rng.normal(size=(1, 6, 6, 2)).astype(np.float32)  # 6 / stride 2, kernel 3: one pixel of padding, after
    conv_out, dw_out, up, pool, both = (t.numpy() for t in model({"x": torch.from_numpy(x)},
                                                                    ["conv", "dw_out", "up", "pool", "both"]))
    w16, b16, d16 = (a.astype(np.float16).astype(np.float64) for a in (w, b, depthwise))  # the shard's precision
    expected = np.clip(_same_conv(x.astype(np.float64), w16, 2) + b16, 0, 6)
    assert conv_out.shape == (1, 3, 3, 3) and np.allclose(conv_out, expected, atol=1e-4)
    per_channel = np.concatenate([_same_conv(expected[..., c:c + 1], d16[:, :, c:c + 1, :], 1) for c in range(3)],
                                 axis=3)
    assert np.allclose(dw_out, per_channel, atol=1e-4)
    assert up.shape == (1, 5, 7, 3) and np.allclose(up, _legacy_resize(per_channel, 5, 7), atol=1e-4)
    padded = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pooled = np.stack([np.stack([padded[0, i:i + 3, j:j + 3].max((0, 1)) for j in range(7)]) for i in range(5)])
    assert np.allclose(pool[0], pooled, atol=1e-5)
    assert both.shape == (1, 1, 1, 6) and np.allclose(both[..., :3], pooled.mean((0, 1)), atol=1e-5)


def test_a_graph_it_cannot_run_exactly_is_refused(tmp_path: Path) -> None:
    unknown = _graph(tmp_path, {}, [{"name": "y", "op": "Softmax", "input": ["x"]}])
    with pytest.raises(ModelMismatchError, match="Softmax"):
        TFJSGraphModel(unknown)
    model = TFJSGraphModel(_graph(tmp_path, {}, [{"name": "y", "op": "Relu6", "input": ["x"]}]))
    with pytest.raises(ModelMismatchError, match="input 'x' was not given"):
        model({}, ["y"])


@pytest.fixture(scope="module")
def detector(model_cache: Path):  # type: ignore[no-untyped-def]
    from vqagraph.models.centernet import CenterNetDetector, ensure_centernet

    folder = ensure_centernet(model_cache)
    assert ensure_centernet(model_cache) == folder  # fetched once
    return CenterNetDetector(folder)


def test_the_detector_decodes_its_own_heatmap(detector) -> None:  # type: ignore[no-untyped-def]
    """The graph's own decoding (peaks of the class heatmaps, boxes from the distances at each peak) is what CenterNet
    says: a peak at cell (y, x) of class c is the box (4x - l, 4y - t, 4x + r, 4y + b)."""
    photo = Image.open(Path(__file__).parents[1] / "vqagraph/data/demo/fosters-sign.jpg").convert("RGB")
    pixels = torch.from_numpy(np.asarray(photo.resize((512, 512), Image.Resampling.BILINEAR), dtype=np.float32))
    heat, sides, found = detector.model({"tower_0/images": pixels[None]},
                                        ["tower_0/keypoints", "tower_0/wh", "tower_0/detections"])
    peaks = heat * (heat == torch.nn.functional.max_pool2d(heat.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1))
    scores, where = peaks.reshape(-1).topk(100)
    cell, label = where // 80, where % 80
    y, x = cell // 128, cell % 128
    side = sides[0].reshape(-1, 4)[cell]
    boxes = torch.stack([4 * x - side[:, 0], 4 * y - side[:, 1], 4 * x + side[:, 2], 4 * y + side[:, 3]], 1)
    assert torch.allclose(found[0][:, 4], scores) and torch.equal(found[0][:, 5], label.float())
    assert torch.allclose(found[0][:, :4], boxes, atol=1e-4)


def test_detections_are_kept_surest_first_one_box_each(detector) -> None:  # type: ignore[no-untyped-def]
    from vqagraph.models.centernet import box_iou

    photo = Image.open(Path(__file__).parents[1] / "vqagraph/data/demo/fosters-sign.jpg")
    detections = detector(photo)
    assert 0 < len(detections) <= 10 and len(detector.labels) == 80 and detector.labels[0] == "person"
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert all(d.score >= 0.2 and d.label in detector.labels for d in detections)
    assert all(0 <= d.box[0] <= d.box[2] <= photo.width and 0 <= d.box[1] <= d.box[3] <= photo.height
               for d in detections)
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)
    for i in range(len(boxes)):  # greedy non-maximum suppression: no kept pair overlaps by more than 0.4
        assert (box_iou(boxes[i], boxes[i + 1:]) <= 0.4 + 1e-6).all()
    assert detector(Image.new("RGB", (64, 48), "white")) == []  # a blank image: nothing
