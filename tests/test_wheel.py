"""The wheel is the product: built from the source, installed into a fresh environment outside
the checkout, it lists the released models, segments a photo and lists the paper's tables
from another folder, with nothing of the checkout on its path.

The environment reuses the installed dependencies (torch is large): a venv without pip whose
site-packages holds a .pth naming this interpreter's site-packages. A .pth there is not
processed as a site directory, so the checkout's editable install of parsenet is not seen."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(the venv's bin folder, an environment with nothing of the checkout in it)."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    source = root / "source"  # a copy: building writes build/ and egg-info beside the source
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(root / "dist"), str(source)], root, env)
    wheel = next((root / "dist").glob("parsenet-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   root, env).strip()
    deps = [*site.getsitepackages(), sysconfig.get_path("purelib")]
    (Path(purelib) / "parsenet_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], root, env)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", {**env, "PARSENET_TEST_CWD": str(elsewhere)}


def test_the_installed_package_is_the_wheel(installed: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = installed
    cwd = Path(env["PARSENET_TEST_CWD"])
    where = _run([str(bin_dir / "python"), "-c", "import parsenet; print(parsenet.__file__)"],
                 cwd, env).strip()
    assert where.startswith(str(bin_dir.parent)) and str(REPO) not in where


def test_models_predict_and_study_list_run_from_another_folder(
        installed: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = installed
    cwd = Path(env["PARSENET_TEST_CWD"])
    models = _run([str(bin_dir / "parsenet"), "models"], cwd, env)
    assert "siftflow" in models and "val mean IoU" in models

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(cwd / "photo.png")
    printed = _run([str(bin_dir / "parsenet"), "predict", "photo.png", "--model", "siftflow",
                    "--out", "predictions", "--no-progress"], cwd, env)
    assert "1 image(s)" in printed
    labels = list((cwd / "predictions").rglob("*.png"))
    assert any(Image.open(p).size == (96, 64) for p in labels)  # the label map, full size

    listed = _run([str(bin_dir / "parsenet"), "study", "--list"], cwd, env)
    assert "configs/paper/table3_siftflow_fc7.yaml" in listed and "35.4" in listed
    # The configs listed ship with the wheel and load there.
    loaded = _run([str(bin_dir / "python"), "-c",
                   "from parsenet.apps.study.paper import config_file, load_paper_figures\n"
                   "from parsenet.config import load_config\n"
                   "rows = [r for r in load_paper_figures().rows.values() if r.config]\n"
                   "for r in rows: load_config(config_file(r.config))\n"
                   "print(len(rows), config_file(rows[0].config))"], cwd, env).split()
    rows_in_source = len(list((REPO / "src" / "parsenet" / "configs" / "paper").glob("*.yaml")))
    assert int(loaded[0]) == rows_in_source and loaded[1].startswith(str(bin_dir.parent))
