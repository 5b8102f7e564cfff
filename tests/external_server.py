"""A local HTTP server (127.0.0.1 only) serving synthetic public-HPA channel JPGs, with faults.

Used by tests/test_external_*.py. Faults are queued per path and consumed one per request:
"500" (server error), "404", "stall" (no response until the server closes), "stall_body"
(headers and half the body, then silence until the server closes), "trickle" (the body in 300
pieces, 0.1 s apart: 30 s, longer than any client deadline), "truncate" (half the body, then the
connection closes). Paths in `corrupt` always answer with undecodable bytes of the right length.
A stall lasts until the server closes, not a number of seconds: however slow the machine, the
client's timeout is what ends it.

`answer_first=N` answers the first N requests and holds every later one until `release()`: a
client stopped while `held` equals its connections has done exactly N files, on a slow machine
as on a fast one, and has no request on the way that could reach the server later.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from hpa.data.images import CHANNELS
from hpa.labels import CLASS_NAMES
from hpa.synthetic import SyntheticConfig, render_sample

# HPA colours each channel file: red.jpg is red on black, yellow.jpg red + green (BGR order).
TINT = {"red": (0, 0, 1), "green": (0, 1, 0), "blue": (1, 0, 0), "yellow": (0, 1, 1)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stalled handlers must not hold up shutdown


class HPAServer:
    def __init__(self, files: dict[str, bytes], answer_first: int | None = None):
        self.files = files
        self.answer_first = answer_first
        self.held = 0  # requests waiting for release()
        self._seen = 0  # requests since the start (requests.clear() leaves it)
        self.faults: dict[str, list[str]] = {}
        self.corrupt: set[str] = set()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()  # set: every held request goes on
        self._closing = threading.Event()  # set: every stall ends
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HPAServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def release(self) -> None:
        """Let the held requests go on, and answer every later one at once."""
        self._release.set()

    def _next_fault(self, path: str) -> tuple[str | None, bool]:
        """(the fault to play, whether to hold this request), counting it."""
        with self._lock:
            self.requests[path] += 1
            self._seen += 1
            queue = self.faults.get(path)
            hold = (
                self.answer_first is not None
                and self._seen > self.answer_first
                and not self._release.is_set()
            )
            self.held += hold
            return (queue.pop(0) if queue else None), hold

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fault, hold = server._next_fault(self.path)
                if hold:
                    server._release.wait()
                body = server.files.get(self.path)
                if fault == "stall":
                    server._closing.wait()
                    return
                if body is None or fault == "404":
                    self.send_error(404)
                    return
                if fault == "500":
                    self.send_error(500)
                    return
                if self.path in server.corrupt:
                    body = bytes(
                        np.random.default_rng(len(body)).integers(0, 256, len(body), dtype=np.uint8)
                    )
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if fault == "trickle":  # every piece in time, the whole far too slow
                        piece = -(-len(body) // 300)
                        for start in range(0, len(body), piece):
                            self.wfile.write(body[start : start + piece])
                            self.wfile.flush()
                            if server._closing.wait(0.1):
                                break
                        return
                    if fault in ("stall_body", "truncate"):
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        if fault == "stall_body":
                            server._closing.wait()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: exactly what a stall test wants

        return Handler


def tinted_jpg(plane: np.ndarray, channel: str) -> bytes:
    bgr = np.stack([plane * t for t in TINT[channel]], axis=-1).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def public_hpa(n: int, size: int = 96, seed: int = 0) -> tuple[dict[str, bytes], list[dict], dict]:
    """(files by URL path, list rows, source planes by sample ID): n synthetic public HPA samples."""
    cfg = SyntheticConfig(n_images=n, seed=seed, image_size=size, cells_per_image=(2, 3), workers=1)
    files, rows, planes = {}, [], {}
    for i in range(n):
        sample = render_sample(cfg, i)
        antibody, stem = (
            1000 + i // 2,
            f"{50 + i}_A{i % 9 + 1}_{i % 3 + 1}",
        )  # two images per antibody
        for c, channel in enumerate(CHANNELS):
            files[f"/{antibody}/{stem}_{channel}.jpg"] = tinted_jpg(sample.image[..., c], channel)
        names = ",".join(CLASS_NAMES[k] for k in sample.image_labels)
        rows.append({"path": f"/{antibody}/{stem}", "Label": names, "Cellline": "U-2 OS"})
        planes[f"{antibody}_{stem}"] = sample.image
    return files, rows, planes


def write_list(path: Path, base_url: str, rows: list[dict], sep: str = "\t") -> Path:
    lines = [sep.join(["Image", "Label", "Cellline", "in_trainset"])]
    lines += [
        sep.join([base_url + r["path"], r["Label"], r["Cellline"], r.get("in_trainset", "False")])
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
