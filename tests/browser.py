"""Open an HTML file in headless Chromium (Debian's `chromium`): what its page did, and a
screenshot. Tests that need it skip where it is absent (`make test` installs it)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

# Injected into a copy of the page under test (never into the report itself), first in <head>
# so that its listener sees every later error: script errors, console.error calls, and images
# that fail to load. After load it writes what it saw into the DOM, read with --dump-dom.
PROBE = """<script>
window.__seen = [];
addEventListener("error", function (e) {
  var t = e.target;
  window.__seen.push(t && t.tagName ? "failed to load " + t.tagName : String(e.message));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__seen.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var failed = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    images: images.length,
    failed: failed.map(function (i) { return i.alt; }),
    errors: window.__seen,
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (make test installs Debian's chromium)")
    return found


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


class Values(HTMLParser):
    """Every element's data-key -> (data-value as JSON, its text)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, tuple[Any, str]] = {}
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-key" in attrs:
            self._open = attrs["data-key"]
            self.values[self._open] = (json.loads(attrs["data-value"]), "")

    def handle_data(self, data):
        if self._open is not None:
            value, text = self.values[self._open]
            self.values[self._open] = (value, text + data)

    def handle_endtag(self, tag):
        self._open = None


def open_page(page: Path) -> dict[str, Any]:
    """Render `page` twice in fresh profiles: once with the probe (images loaded, failed ones,
    errors), once for a screenshot. Returns the probe's findings, the values the page shows
    (data-key -> (exact value, text)) and the screenshot as an RGB array."""
    import cv2

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = page.read_text(encoding="utf-8")
        probed = tmp / page.name
        probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        done = _run(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp / "p1")
        match = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
        assert match, f"the page never finished loading: {done.stderr[-2000:]}"
        probe = json.loads(html.unescape(match.group(1)))
        dom = done.stdout
        shot = tmp / "shot.png"
        done = _run(["--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()], tmp / "p2")
        assert shot.is_file(), f"no screenshot: {done.stderr[-2000:]}"
        image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
    values = Values()
    values.feed(dom)  # what the browser built, not the file's text
    return {**probe, "values": values.values, "screenshot": image}


def not_blank(image: np.ndarray) -> bool:
    """A rendered page, not a white (or any single-colour) canvas."""
    return float(image.std()) > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
