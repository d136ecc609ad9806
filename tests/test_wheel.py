"""The built wheel runs the default profile on its own: the Shapes-world weights are inside it, not read from the
checkout. The wheel is installed into a folder outside the checkout and run from there (its dependencies are the
test environment's)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("vqagraph-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for model in ("shapes-blip-itm", "shapes-blip-captioner", "shapes-t5-qg", "shapes-instructblip",
                  "shapes-llava-projector"):
        assert f"vqagraph/weights/{model}/config.json" in names, f"{model} is not in the wheel"
    assert "vqagraph/agents/web_page/index.html" in names
    assert not any(n.startswith(("vqagraph/lab/", "vqagraph_lab/", "lab/")) for n in names), "the lab is in the wheel"
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    return target


def test_the_installed_wheel_answers_on_every_route_of_the_default_profile(installed: Path, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    picture = Image.new("RGB", (224, 224), "white")
    picture.paste((220, 30, 30), (60, 60, 160, 160))
    picture.save(image)
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import vqagraph; print(vqagraph.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(installed)), where
    for route in ("img2llm", "bridge", "projection"):
        done = subprocess.run([sys.executable, "-m", "vqagraph", "ask", str(image), "What colour is the square?",
                               "--route", route], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("answer: ") and f"route:  {route}" in done.stdout, done.stdout
