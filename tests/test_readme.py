"""The README's commands run as written, so the guide cannot drift from the code.

Every fenced block of README.md is labelled: ``sh`` blocks are commands, ``python`` blocks
are programs, ``text`` blocks are neither. Each block runs in order in one scratch folder
(a later block may use what an earlier one made, as a reader's shell would), with the
substitutions below standing in for the reader's own files and settings:

- ``photo.jpg``: a real photo (a Stanford Background val image where ../shared/data holds
  it, else a generated one); ``DIR``: a tiny folder dataset with Stanford Background's
  classes; ``configs/``: the repository's configs folder.
- ``parsenet train``: two iterations on 64-pixel crops (``TINY_TRAINING``); ``torchrun``:
  two processes instead of four (the test machine has two cores).
- ``make TARGET``: ``make -n TARGET`` (the target exists and resolves; running the suite
  inside the suite is not the point).
- ``parsenet serve``: started on a free port, asked for ``/api/info``, then stopped.
- The Python block: a 64 x 96 input instead of 375 x 500.

A command that cannot run here, or not within this test's minute, is only parsed; each is
listed in ``PARSED_ONLY`` with its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parsenet.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STANFORD_VAL = ROOT.parent / "shared" / "data" / "stanford_background" / "images" / "val"
STANFORD_CLASSES = ["sky", "tree", "road", "grass", "water", "building", "mountain",
                    "foreground"]
TINY_TRAINING = ["--set", "train.iterations=2", "--set", "train.batch_size=2",
                 "--set", "data.crop_size=64", "--set", "train.warmup_iterations=0",
                 "--set", "train.checkpoint_every=2", "--set", "train.progress=false",
                 "--set", "data.workers=0"]
PARSED_ONLY = {
    "--nnodes=2": "torchrun across two machines waits for the second one",
    "export": "the ONNX export and check of the Lite0 model take minutes on two shared cores "
              "(tests/engine/test_export.py exports and checks smaller models)",
}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def command_lines(code: str) -> list[list[str]]:
    """The commands of an sh block as argument lists (comments dropped, ``\\`` joined)."""
    joined = code.replace("\\\n", " ")
    return [argv for line in joined.splitlines()
            if (argv := shlex.split(line, comments=True))]


def test_every_block_is_labelled_and_every_command_parses():
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks if lang not in ("sh", "python", "text")] == []
    commands = [argv for lang, code in blocks if lang == "sh" for argv in command_lines(code)]
    assert len(commands) >= 12
    parser = build_parser()
    for argv in commands:
        if argv[0] == "torchrun":
            argv = argv[argv.index("parsenet.cli") - 1:]
            argv[:2] = ["parsenet"]
        if argv[0] == "parsenet":
            parser.parse_args(argv[1:])  # a wrong option exits here
        else:
            assert argv[0] == "make", argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    return env


def _serve(argv: list[str], cwd: Path) -> dict:
    """Start ``parsenet serve`` on a free port, return its /api/info, stop it."""
    port = _free_port()
    argv = [a for a in argv[1:]]
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    else:
        argv += ["--port", str(port)]
    process = subprocess.Popen([sys.executable, "-m", "parsenet.cli", *argv], cwd=cwd,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        printed = []
        for line in process.stdout:  # the URL is printed just before uvicorn listens
            printed.append(line)
            if line.startswith("open http://"):
                break
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info",
                                            timeout=60) as answer:
                    return json.load(answer)
            except urllib.error.URLError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not answer: {''.join(printed)}") from None
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _workspace(tmp: Path) -> dict[str, str]:
    """The reader's files: a photo and a tiny dataset; returns the substitution table."""
    photo = tmp / "photo.jpg"
    real = sorted(STANFORD_VAL.glob("*.jpg"))[:1] if STANFORD_VAL.is_dir() else []
    if real:
        photo.write_bytes(real[0].read_bytes())
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3),
                                                          np.uint8)).save(photo)
    data = tmp / "mydata"
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (data / kind / split).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (72, 96, 3), np.uint8)).save(
                data / "images" / split / f"im{i}.png")
            label = rng.integers(0, len(STANFORD_CLASSES), (72, 96)).astype(np.uint8)
            Image.fromarray(label).save(data / "labels" / split / f"im{i}.png")
    (data / "classes.txt").write_text("\n".join(STANFORD_CLASSES) + "\n")
    return {"photo.jpg": str(photo), "DIR": str(data), "configs/": f"{ROOT / 'configs'}/"}


def _substitute(argv: list[str], table: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for word, value in table.items():
            arg = re.sub(rf"(?<![\w/.]){re.escape(word)}", value, arg)
        out.append(arg)
    return out


def _run(argv: list[str], tmp: Path) -> str:
    """One README command; returns what it printed."""
    if argv[0] == "make":
        done = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    if argv[0] == "torchrun":
        argv = [a.replace("--nproc_per_node=4", "--nproc_per_node=2") for a in argv]
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:],
                               *TINY_TRAINING], cwd=tmp, env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout
    assert argv[0] == "parsenet", argv
    if argv[1] == "serve":
        return json.dumps(_serve(argv, tmp))
    extra = TINY_TRAINING if argv[1] == "train" else []
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main([*argv[1:], *extra])
    assert code == 0, (argv, printed.getvalue()[-2000:])
    return printed.getvalue()


def _run_python(code: str, table: dict[str, str]) -> str:
    code = code.replace("375, 500", "64, 96").replace('"photo.jpg"', repr(table["photo.jpg"]))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{README}:python", "exec"), {"__name__": "readme"})
    return printed.getvalue()


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path, monkeypatch):
    table = _workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    outputs: list[str] = []
    for lang, code in readme_blocks():
        if lang == "python":
            outputs.append(_run_python(code, table))
            continue
        if lang != "sh":
            continue
        for argv in command_lines(code):
            if any(word in argv for word in PARSED_ONLY):
                continue
            outputs.append(_run(_substitute(argv, table), tmp_path))
    printed = "\n".join(outputs)
    # What the guide promises each command leaves behind.
    assert (tmp_path / "predictions" / "photo_overlay.jpg").is_file()
    assert (tmp_path / "predictions" / "im0.png").is_file()
    assert json.loads((tmp_path / "stanford.json").read_text())["split"] == "val"
    assert (tmp_path / "runs" / "mine" / "checkpoints" / "best.eval-val-whole.json").is_file()
    assert (tmp_path / "runs" / "ddp" / "checkpoints" / "last.pt").is_file()
    assert '"key": "stanford"' in printed and '"key": "checkpoints"' in printed
    assert "Table 3" in printed
    assert not (tmp_path / "runs" / "released").exists()
