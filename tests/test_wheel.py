"""The package installs whole (issue 32): the wheel and the sdist are built with pypa `build`, the wheel is installed
into a fresh venv outside the checkout, and the demo (the Shapes world, then the default profile's photographs) and
one `ask` per route of the `shapes` profile run there with the venv's own `vqagraph` script, from a folder outside
the checkout. The Shapes-world weights and the demo photographs come from inside the wheel, never from the checkout.

The build works on a copy of the checkout holding what git would check out (tracked files and untracked ones git
does not ignore), as CI's fresh clone does: a git-ignored `build/` left by an earlier setuptools build holds stale
modules (the old `vqagraph/lab`, say) that setuptools would pack into a wheel built in place.

The sdist must be complete: a wheel built from the unpacked sdist holds the same files, byte for byte, as the wheel
built from the checkout.

The fresh venv borrows its dependencies instead of installing them: the registry's torch + transformers + vLLM are
gigabytes, and what is tested here is the package's own contents (its modules, weights, web page and console
script), not pip's resolver. The wheel goes in with `pip install --no-deps`; then a `.pth` file in the venv's
site-packages appends the test environment's site-packages to sys.path. A plain path line in a .pth is appended
after the venv's own site-packages, and .pth files inside the appended folder are not processed, so the test
environment's editable finders (vqagraph's, pointing at the checkout, and the lab's) never activate; the test checks
that `import vqagraph` in the venv is the installed copy and that the lab cannot be imported there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHAPES_MODELS = ("shapes-blip-itm", "shapes-blip-captioner", "shapes-t5-qg", "shapes-instructblip",
                 "shapes-llava-projector", "shapes-llama-adapter")  # what the `shapes` profile loads
ROUTES = ("img2llm", "bridge", "projection", "adapter")
# What the plain copy leaves out where git cannot list the checkout's files: venvs, caches, earlier builds.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".ci-*", "out")


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment (model cache, HF_HUB_OFFLINE, data folder) without anything that points Python at
    the checkout or at the test venv."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    return {**env, **extra}


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env or _clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _copy_checkout(dest: Path) -> Path:
    """What a fresh clone plus the working tree's changes holds: git's tracked and untracked-but-not-ignored
    files (a plain copy without the ignored folders where git cannot list them)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        return dest
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is listed but gone
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _build(source: Path, out: Path, *kinds: str) -> None:
    _run([sys.executable, "-m", "build", "--no-isolation", *kinds, "--outdir", out, source], cwd=out.parent)


def _members(wheel: Path) -> dict[str, int]:
    """Each file of the wheel with its CRC-32."""
    with zipfile.ZipFile(wheel) as archive:
        return {info.filename: info.CRC for info in archive.infolist()}


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    site: Path  # its own site-packages
    borrowed: tuple[Path, ...]  # the test environment's site-packages, appended by a .pth

    @property
    def script(self) -> Path:
        return self.root / "bin" / "vqagraph"

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def env(self) -> dict[str, str]:
        """As `source bin/activate` leaves it."""
        return _clean_env(VIRTUAL_ENV=str(self.root), PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("build")
    source = _copy_checkout(work / "checkout")
    out = work / "dist"
    out.mkdir()
    _build(source, out, "--wheel", "--sdist")
    (wheel,) = out.glob("vqagraph-*.whl")
    (sdist,) = out.glob("vqagraph-*.tar.gz")
    return Built(wheel, sdist)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("fresh") / "venv"
    base = getattr(sys, "_base_executable", None) or sys.executable  # the interpreter .venv was made from
    _run([base, "-m", "venv", root], cwd=root.parent)
    python = root / "bin" / "python"
    # The wheel first: with the test environment on its path, pip would see the editable vqagraph there.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
          built.wheel], cwd=root.parent)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root.parent).stdout.strip())
    borrowed = tuple(dict.fromkeys(Path(sysconfig.get_path(kind)) for kind in ("purelib", "platlib")))
    (site / "vqagraph_test_deps.pth").write_text("".join(f"{path}\n" for path in borrowed))
    return Venv(root, site, borrowed)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the checkout."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def test_the_wheel_holds_the_package_its_weights_and_page_and_no_lab(built: Built) -> None:
    names = _members(built.wheel)
    for model in SHAPES_MODELS:
        assert f"vqagraph/weights/{model}/config.json" in names, f"{model} is not in the wheel"
        assert any(n.startswith(f"vqagraph/weights/{model}/") and n.endswith(".safetensors") for n in names), model
    assert "vqagraph/agents/web_page/index.html" in names
    assert {"vqagraph/data/demo/bee.jpg", "vqagraph/data/demo/fosters-sign.jpg"} <= set(names)
    assert "vqagraph/__main__.py" in names
    assert not any(n.startswith(("vqagraph/lab/", "vqagraph_lab/", "lab/")) for n in names), "the lab is in the wheel"
    with zipfile.ZipFile(built.wheel) as archive:
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "vqagraph = vqagraph.agents.cli:main" in archive.read(entry_points).decode()


def test_the_sdist_is_complete_and_rebuilds_the_same_wheel(built: Built, tmp_path: Path) -> None:
    with tarfile.open(built.sdist) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "unpacked", filter="data")
    prefix = built.sdist.name.removesuffix(".tar.gz") + "/"
    assert all(n == prefix.rstrip("/") or n.startswith(prefix) for n in names), names[:5]
    inside = {n.removeprefix(prefix) for n in names}
    assert {"pyproject.toml", "PKG-INFO", "vqagraph/__init__.py"} <= inside
    package = {n for n in _members(built.wheel) if n.startswith("vqagraph/")}
    assert package - inside == set(), f"the sdist lacks {sorted(package - inside)[:10]}"
    assert not any(n.startswith(("vqagraph/lab/", "vqagraph_lab/", "lab/")) for n in inside), "the lab is in the sdist"
    again = tmp_path / "dist"
    again.mkdir()
    _build(tmp_path / "unpacked" / prefix.rstrip("/"), again, "--wheel")
    (rebuilt,) = again.glob("vqagraph-*.whl")
    assert rebuilt.name == built.wheel.name
    ours, theirs = _members(built.wheel), _members(rebuilt)
    assert sorted(theirs) == sorted(ours), (sorted(set(ours) ^ set(theirs)))
    differing = [n for n in ours if n.startswith("vqagraph/") and ours[n] != theirs[n]]
    assert differing == [], differing


def test_the_fresh_venv_imports_the_installed_wheel_not_the_checkout(venv: Venv, outside: Path) -> None:
    probe = ("import importlib.util, json, sys, vqagraph\n"
             "print(json.dumps({'vqagraph': vqagraph.__file__, 'path': sys.path,\n"
             "                  'lab': importlib.util.find_spec('vqagraph_lab') is not None,\n"
             "                  'finders': [m for m in sys.modules if m.startswith('__editable__')],\n"
             "                  'torch': importlib.util.find_spec('torch').origin}))")
    seen = json.loads(_run([venv.python, "-c", probe], cwd=outside, env=venv.env()).stdout)
    where = Path(seen["vqagraph"]).resolve()
    assert where.is_relative_to(venv.site.resolve()), where
    assert not where.is_relative_to(ROOT), where
    # The borrowed folders come after the venv's own site-packages, and their .pth files did not run.
    path = [str(Path(p).resolve()) for p in seen["path"] if p]
    for borrowed in venv.borrowed:
        assert path.index(str(borrowed.resolve())) > path.index(str(venv.site.resolve()))
    assert seen["finders"] == [], "the test environment's editable finders ran in the fresh venv"
    assert not seen["lab"], "the lab (an editable install in the test environment) is importable in the fresh venv"
    assert any(Path(seen["torch"]).resolve().is_relative_to(b.resolve()) for b in venv.borrowed), seen["torch"]


def test_the_demo_runs_from_the_installed_wheel(venv: Venv, outside: Path) -> None:
    out = outside / "demo"
    done = _run([venv.script, "demo", "--out", out], cwd=outside, env=venv.env())
    assert "profile: shapes" in done.stdout, done.stdout[:2000]
    questions = (out / "questions.jsonl").read_text().splitlines()
    assert len(questions) >= 1 and all(json.loads(q)["family"] for q in questions)
    assert (out / "captions.jsonl").is_file() and (out / "manifest.json").is_file()
    assert len(list((out / "images").glob("*.png"))) == 3  # the default --scenes
    explained = list(out.glob("explain-*.png"))
    assert explained, "no explain picture (the knowledge question takes the text route)"
    for picture in explained:
        with Image.open(picture) as image:
            assert image.size[0] > 0 and image.size[1] > 0
    assert "the same questions through each route" in done.stdout
    assert "real photographs - profile: photos" in done.stdout and "[photo] bee.jpg" in done.stdout
    assert len(list(out.glob("explain-photo-*.png"))) == 3  # the photos' tags and text boxes
    assert "done in" in done.stdout


@pytest.mark.parametrize("route", ROUTES)
def test_the_installed_wheel_answers_on_every_route_of_the_shapes_profile(venv: Venv, outside: Path,
                                                                          route: str) -> None:
    image = outside / "red.png"
    picture = Image.new("RGB", (224, 224), "white")
    picture.paste((220, 30, 30), (60, 60, 160, 160))
    picture.save(image)
    done = _run([venv.script, "ask", image, "What colour is the square?", "--route", route, "--profile", "shapes"],
                cwd=outside, env=venv.env())
    assert done.stdout.startswith("answer: ") and f"route:  {route}" in done.stdout, done.stdout
