"""serve under hostile load, on loopback only: clients that leave, a full queue, the port."""

from __future__ import annotations

import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import image_bytes, running_server, write_tiny_pair  # noqa: E402

from parsenet.apps.serve import ServeSettings, UploadLimits, create_app  # noqa: E402
from parsenet.apps.serve.models import load_served_models  # noqa: E402
from parsenet.cli import main  # noqa: E402

CLASSES = ["sky", "ground", "thing", "water"]
SIDE = 2000  # 4 MP uploads
WINDOW, STRIDE = 64, 48  # 42 x 42 windows of a 2000 x 2000 image, per model
PASSES_PER_IMAGE = 2 * 42 * 42


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class _PeakMemory:
    """The largest RSS of this process seen every 10 ms while in the ``with`` block."""

    def __enter__(self) -> _PeakMemory:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = write_tiny_pair(tmp_path_factory.mktemp("ckpt"), CLASSES, eval_window=WINDOW,
                            eval_stride=STRIDE)
    return load_served_models([(None, p) for p in paths])


def _flat_png(side: int) -> bytes:
    buffer = io.BytesIO()  # a few kB however many pixels: cheap to send, costly to decode
    Image.new("RGB", (side, side), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _passes_once_settled(admission, passes: list, seconds: float) -> int:
    """Waits up to ``seconds`` for no image to be working, then checks that no forward pass
    runs any more; returns the passes made."""
    deadline = time.monotonic() + seconds
    while admission.snapshot()["working"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = len(passes)
    time.sleep(0.5)
    assert len(passes) == stopped  # nothing runs any more
    return stopped


@pytest.mark.slow
def test_clients_that_leave_stop_their_work_and_a_small_request_is_answered(models):
    """Four parallel 4 MP uploads, each 3,528 sliding-window passes, whose clients give up
    after 1.5 s. Their work stops, the places are given back, a 32 x 32 request is answered
    within 10 s, and the server's memory grows by less than 1 GB meanwhile."""
    passes = []
    hooks = [m.model.register_forward_hook(lambda *a: passes.append(1)) for m in models]
    settings = ServeSettings(limits=UploadLimits(max_pixels=4_500_000),
                             memory_budget_gb=1e-3)  # 4 MP images slide
    app = create_app(models, settings)
    big = _flat_png(SIDE)
    try:
        with _PeakMemory() as memory, running_server(app) as url:
            def leave_early(_: int) -> str:
                try:
                    httpx.post(f"{url}/api/predict", files={"image": ("big.png", big)},
                               timeout=1.5)
                except httpx.TimeoutException:
                    return "left"
                return "answered"

            with ThreadPoolExecutor(4) as pool:
                assert list(pool.map(leave_early, range(4))) == ["left"] * 4
            left = time.monotonic()
            small = httpx.post(f"{url}/api/predict?images=false",
                               files={"image": ("small.png", image_bytes(32, 32))}, timeout=30)
            answered = time.monotonic() - left
            admission = app.state.segmenter.admission
            # a pass in flight ends, then its place is freed
            stopped = _passes_once_settled(admission, passes, 2)
    finally:
        for hook in hooks:
            hook.remove()
    assert small.status_code == 200 and small.json()["height"] == 32
    assert answered < 10, f"the small request waited {answered:.1f} s"
    assert admission.snapshot() == {"working": 0, "waiting": 0, "pixels": 0}
    # All four images would be 4 x 3,528 passes; stopped ones leave most of theirs undone.
    assert stopped < PASSES_PER_IMAGE, stopped
    grown = (memory.peak - memory.start) / 1e9
    assert grown < 1.0, f"RSS grew by {grown:.2f} GB"
    print(f"small request answered in {answered:.2f} s; {stopped} passes in all; RSS grew by "
          f"{grown:.3f} GB")


@pytest.mark.slow
def test_a_streaming_client_that_leaves_stops_its_work(models):
    passes = []
    hooks = [m.model.register_forward_hook(lambda *a: passes.append(1)) for m in models]
    settings = ServeSettings(limits=UploadLimits(max_pixels=4_500_000),
                             memory_budget_gb=1e-3)  # 4 MP images slide
    app = create_app(models, settings)
    admission = app.state.segmenter.admission
    try:
        with running_server(app) as url:
            with httpx.stream("POST", f"{url}/api/predict?stream=true", timeout=30,
                              files={"image": ("big.png", _flat_png(SIDE))}) as response:
                first = next(response.iter_lines())
            assert first == f'{{"progress": 1, "total": {PASSES_PER_IMAGE}}}'
            stopped = _passes_once_settled(admission, passes, 5)
    finally:
        for hook in hooks:
            hook.remove()
    assert admission.snapshot() == {"working": 0, "waiting": 0, "pixels": 0}
    assert stopped < PASSES_PER_IMAGE // 4, stopped


def test_a_full_queue_is_answered_503_with_one_line(models):
    settings = ServeSettings(max_concurrent=1, max_waiting=2)
    app = create_app(models, settings)
    admission = app.state.segmenter.admission
    admission.queue()
    admission.turn(64, threading.Event())  # one request in work (its slot taken)
    for _ in range(2):  # and two waiting
        admission.queue()
    with TestClient(app) as client:
        for url in ("/api/predict", "/api/predict?stream=true", "/api/predict.png"):
            response = client.post(url, files={"image": ("a.png", image_bytes(8, 8))})
            assert response.status_code == 503
            assert response.json() == {"detail": "the server is busy: 1 image(s) in work and "
                                                 "2 waiting, the most it queues; try again "
                                                 "shortly"}
            assert response.headers["retry-after"] == "5"
        for _ in range(2):
            admission.leave()
        admission.done(64)
        assert client.post("/api/predict", files={"image": ("a.png", image_bytes(8, 8))}
                           ).status_code == 200
    assert admission.snapshot() == {"working": 0, "waiting": 0, "pixels": 0}


def test_no_queue_still_serves_the_free_slots(models):
    app = create_app(models, ServeSettings(max_concurrent=2, max_waiting=0))
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda _: client.post("/api/predict?images=false", files={
            "image": ("a.png", image_bytes(8, 8))}).status_code, range(2)))
    assert codes == [200, 200]


def test_the_pixel_budget_runs_big_images_one_at_a_time(models):
    settings = ServeSettings(limits=UploadLimits(max_pixels=10_000))
    app = create_app(models, settings)
    segmenter = app.state.segmenter
    at_once, peak, lock = [0], [0], threading.Lock()
    run = segmenter.run

    def counted(*args, **kwargs):
        with lock:
            at_once[0] += 1
            peak[0] = max(peak[0], at_once[0])
        try:
            time.sleep(0.05)
            return run(*args, **kwargs)
        finally:
            with lock:
                at_once[0] -= 1

    segmenter.run = counted
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        def ask(side: int) -> int:
            return client.post("/api/predict?images=false", files={
                "image": ("a.png", image_bytes(side, side))}).status_code

        assert list(pool.map(ask, [90] * 4)) == [200] * 4  # 8,100 px: one fits the budget
        assert peak[0] == 1
        peak[0] = 0
        assert list(pool.map(ask, [40] * 4)) == [200] * 4  # 1,600 px: two slots at once
        assert peak[0] == 2



def test_cli_serve_port_0_prints_the_port_it_bound(models, monkeypatch, capsys):
    import uvicorn

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets: bound.append(sockets[0].getsockname()[1]))
    checkpoints = [str(m.checkpoint) for m in models]
    assert main(["serve", "--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1],
                 "--port", "0"]) == 0
    url = re.search(r"open http://127\.0\.0\.1:(\d+)/", capsys.readouterr().out)
    assert url and bound and int(url.group(1)) == bound[0] != 0
