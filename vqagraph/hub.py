"""Loads models by Hub id, local directory or `builtin:NAME`, once per process.

The only place that picks device and dtype: CUDA when present (float16), else CPU (float32).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, TypeVar

import torch
from platformdirs import user_cache_dir

from vqagraph import builtin_llms
from vqagraph.builtin_llms import BUILTIN_LLMS
from vqagraph.config import ModelRef
from vqagraph.errors import ModelMismatchError, ModelNotAvailableError

T = TypeVar("T")

_LOADED: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def cache_root() -> Path:
    """Where vqagraph keeps models it builds or converts (override with VQAGRAPH_CACHE)."""
    return Path(os.environ.get("VQAGRAPH_CACHE") or user_cache_dir("vqagraph"))


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def pick_dtype(device: torch.device) -> torch.dtype:
    # fp32 on CPU: bf16 autocast measured 30-50x slower on these CPUs (measured here).
    return torch.float16 if device.type == "cuda" else torch.float32


# The home of the Shapes-world models that ship inside the package; the trainers (lab/vqagraph_lab) write there.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shipped_weights(name: str) -> Path:
    """The Shapes-world models that ship inside the package (trained by `vqagraph-lab`)."""
    folder = WEIGHTS_DIR / name
    if not (folder / "config.json").exists():
        raise ModelNotAvailableError(
            f"the shipped model {name!r} is not in {folder.parent}: reinstall vqagraph, or train it with "
            "`vqagraph-lab` (see the README)"
        )
    return folder


def resolve(ref: ModelRef) -> str:
    """A local directory for built-ins and paths; the Hub id unchanged otherwise."""
    if ref.id.removeprefix("builtin:") in BUILTIN_LLMS:
        return str(builtin_llms.ensure(ref.id.removeprefix("builtin:"), cache_root()))
    if ref.id.startswith("builtin:efficientnet-lite"):
        from vqagraph.models.efficientnet_lite import ensure_efficientnet_lite

        return str(ensure_efficientnet_lite(ref.id.removeprefix("builtin:"), cache_root()))
    if ref.id == "builtin:centernet-coco":
        from vqagraph.models.centernet import ensure_centernet

        return str(ensure_centernet(cache_root()))
    if ref.id.startswith("builtin:shapes-"):
        return str(shipped_weights(ref.id.removeprefix("builtin:")))
    if ref.id.startswith("builtin:"):
        from vqagraph.models.tiny import BUILDERS, VERSION, ensure_builtin

        name = ref.id.removeprefix("builtin:")
        if name not in BUILDERS:
            known = ", ".join(sorted([*BUILDERS, *BUILTIN_LLMS]))
            raise ModelNotAvailableError(f"unknown built-in model {ref.id!r}; known: {known}")
        return str(ensure_builtin(name, cache_root() / f"builtin-v{VERSION}"))
    path = Path(ref.id).expanduser()
    if path.exists() or ref.id.startswith((".", "/", "~")):
        if not (path / "config.json").exists() and not any(path.glob("*.json")):
            raise ModelNotAvailableError(f"model directory {path} has no config.json")
        return str(path)
    return ref.id


def load(cls: Any, ref: ModelRef, role: str, device: torch.device | None = None, **kwargs: Any) -> Any:
    """`cls.from_pretrained` once per (class, source, device); a missing model names itself and its role."""
    source = resolve(ref)
    key = (cls, source, ref.revision, str(device), tuple(sorted(kwargs.items())))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            if ref.revision:
                kwargs = {**kwargs, "revision": ref.revision}
            obj = cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as exc:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = "the Hugging Face Hub is not reachable" if not offline else "HF_HUB_OFFLINE=1 is set"
            raise ModelNotAvailableError(
                f"cannot load the {role} model {ref.id!r} ({cls.__name__}): weights are not available locally "
                f"and {hint}. Point the profile's `{role}` at a local directory, or use the offline profile. "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from exc
        if device is not None and isinstance(obj, torch.nn.Module):
            obj = obj.to(device=device, dtype=pick_dtype(device)).eval()
        _LOADED[key] = obj
        return obj


def quantized_int8(model: Any, ref: ModelRef) -> Any:
    """The model with every `nn.Linear` in int8 (torch's dynamic quantisation: weights int8, activations quantised
    per batch), once per process like `load`. The float model stays as loaded: other roles may share it."""
    key = ("int8-dynamic", id(model), ref)
    with _LOCK:
        if key not in _LOADED:
            import warnings

            with warnings.catch_warnings():  # torch 2.13 points eager-mode quantisation at torchao
                warnings.simplefilter("ignore")
                _LOADED[key] = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return _LOADED[key]


def clear() -> None:
    """Forget every loaded model (tests use this to measure loading)."""
    with _LOCK:
        _LOADED.clear()


def checkpoint_files(source: str, revision: str | None, parts: tuple[str, ...], what: str) -> tuple[Path, list[Path]]:
    """config.json and the safetensors files holding the weights whose names start with `parts`, downloading only
    those shards from the Hub: a bridge reads a few parts of a multimodal checkpoint, never its LLM."""
    import json

    folder = Path(source).expanduser()
    local = folder.is_dir()

    def get(name: str) -> Path | None:
        if local:
            path = folder / name
            return path if path.exists() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(source, name, revision=revision))
        except EntryNotFoundError as exc:  # the file is not in the repository (a single-file checkpoint has no index)
            if isinstance(exc, LocalEntryNotFoundError):
                raise OSError(f"{name}: {exc}") from exc
            return None
        except Exception as exc:  # offline, missing repo: `load` turns OSError into ModelNotAvailableError
            raise OSError(f"{name}: {exc}") from exc

    config = get("config.json")
    if config is None:
        raise OSError(f"{source} has no config.json")
    index = get("model.safetensors.index.json")
    if index is not None:
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        shards = sorted({f for k, f in weight_map.items() if k.startswith(parts)})
        files = [p for p in (get(s) for s in shards) if p is not None]
    else:
        single = get("model.safetensors")
        files = [single] if single is not None else []
    if not files:
        raise ModelMismatchError(f"{source} has no safetensors weights for {what}")
    return config, files
