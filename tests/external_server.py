"""A local HTTP server (127.0.0.1 only) serving synthetic public-HPA channel JPGs, with faults.

Used by tests/test_external_*.py. Faults are queued per path and consumed one per request:
"500" (server error), "404", "stall" (no response for longer than any client timeout),
"stall_body" (headers and half the body, then silence), "trickle" (the body in 30 pieces,
0.1 s apart), "truncate" (half the body, then the connection closes). Paths in `corrupt` always answer with undecodable bytes of the right length.
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
    def __init__(self, files: dict[str, bytes], delay_s: float = 0.0, stall_s: float = 3.0):
        self.files = files
        self.delay_s, self.stall_s = delay_s, stall_s
        self.faults: dict[str, list[str]] = {}
        self.corrupt: set[str] = set()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._release = threading.Event()
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
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            self.requests[path] += 1
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                fault = server._next_fault(self.path)
                if server.delay_s:
                    server._release.wait(server.delay_s)
                body = server.files.get(self.path)
                if fault == "stall":
                    server._release.wait(server.stall_s)
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
                        for start in range(0, len(body), -(-len(body) // 30)):
                            self.wfile.write(body[start : start + -(-len(body) // 30)])
                            self.wfile.flush()
                            if server._release.wait(0.1):
                                break
                        return
                    if fault in ("stall_body", "truncate"):
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        if fault == "stall_body":
                            server._release.wait(server.stall_s)
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
