"""Drawing on images: RGBY composites, cell outlines coloured by class, labels beside them.

Everything works on H x W x 3 uint8 RGB canvases with OpenCV, one cell mask at a time, so that
a full-resolution image with dozens of cells never holds more than one decoded mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hpa.labels import CLASS_NAMES, NUM_CLASSES

# One colour per class, as RGB: matplotlib's tab10 (less its grey), then tab20's lighter shades.
_TAB20 = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (174, 199, 232),
    (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148),
    (247, 182, 210), (219, 219, 141), (158, 218, 229), (127, 127, 127),
)  # fmt: skip
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = _TAB20[:NUM_CLASSES]
FALSE_COLOUR = (255, 0, 255)  # a submitted cell that matches no true cell (no class has it)
MISSED_COLOUR = (255, 255, 255)  # a true cell no submitted cell matches


def composite(image: np.ndarray) -> np.ndarray:
    """H x W x 4 (red, green, blue, yellow) uint8 -> H x W x 3 RGB as HPA shows it
    (yellow = red + green)."""
    r, g, b, y = (image[..., c].astype(np.float32) for c in range(4))
    rgb = np.stack([r + 0.5 * y, g + 0.5 * y, b], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def green(image: np.ndarray) -> np.ndarray:
    """The protein channel alone (what the labels describe), as a green RGB picture."""
    out = np.zeros((*image.shape[:2], 3), dtype=np.uint8)
    out[..., 1] = image[..., 1]
    return out


def fit(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """`image` scaled so that its longer side is `size` (area interpolation when shrinking)."""
    scale = size / max(image.shape[:2])
    if scale == 1.0:
        return image, 1.0
    h, w = (max(1, round(n * scale)) for n in image.shape[:2])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp), scale


def contours(mask: np.ndarray, scale: float = 1.0) -> list[np.ndarray]:
    """The outer edge pixels of a binary mask as OpenCV contours, scaled to a canvas."""
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if scale == 1.0:
        return list(found)
    return [np.round(c * scale).astype(np.int32) for c in found]


def outline(
    canvas: np.ndarray,
    edges: Sequence[np.ndarray],
    colour: tuple[int, int, int],
    thickness: int = 1,
    dashed: bool = False,
) -> None:
    """Draw contours on `canvas` in place; dashed: every other run of 6 edge points."""
    if not dashed:
        cv2.drawContours(canvas, list(edges), -1, colour, thickness)
        return
    for edge in edges:
        points = edge.reshape(-1, 2)
        for start in range(0, len(points), 12):
            piece = points[start : start + 6].reshape(-1, 1, 2)
            cv2.polylines(canvas, [piece], False, colour, thickness)


def _text_scale(canvas: np.ndarray) -> float:
    return max(0.35, canvas.shape[1] / 2400)


def _line_height(canvas: np.ndarray) -> int:
    return int(22 * _text_scale(canvas)) + 2


def label(canvas: np.ndarray, lines: Sequence[str], at: tuple[int, int], colour) -> None:
    """Text lines with a dark halo, the first one's baseline at `at` (x, y), kept inside."""
    scale = _text_scale(canvas)
    thick = 1
    height = _line_height(canvas)
    x, y = at
    widths = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t in lines]
    x = int(min(max(x, 0), canvas.shape[1] - max(widths, default=0) - 1))
    y = int(min(max(y, height), canvas.shape[0] - height * len(lines)))
    for i, text in enumerate(lines):
        pos = (x, y + i * height)
        cv2.putText(canvas, text, pos, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2)
        cv2.putText(canvas, text, pos, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick)


@dataclass
class CellMark:
    """One cell to draw: its edge on the canvas, top classes, and (with truth) its status."""

    edges: list[np.ndarray]
    classes: list[tuple[int, float]]  # (class id, confidence), most confident first
    status: str = ""  # "" (no truth) | match | wrong class | false | missed
    truth: tuple[int, ...] = ()  # the matched true cell's classes

    @property
    def colour(self) -> tuple[int, int, int]:
        if self.status == "false":
            return FALSE_COLOUR
        if self.status == "missed":
            return MISSED_COLOUR
        return CLASS_COLOURS[self.classes[0][0]] if self.classes else MISSED_COLOUR

    def lines(self, top: int) -> list[str]:
        text = [f"{c} {CLASS_NAMES[c][:12]} {p:.2f}" for c, p in self.classes[:top]]
        if self.status == "missed":
            text = ["MISSED true " + "|".join(map(str, self.truth))]
        elif self.status == "false":
            text = ["FALSE", *text]
        elif self.status == "wrong class":
            text = ["WRONG true " + "|".join(map(str, self.truth)), *text]
        return text


def draw_cells(canvas: np.ndarray, cells: Sequence[CellMark], top: int = 3) -> np.ndarray:
    """Outline every cell (false ones in red, dashed; missed ones white, dashed) and write its
    top classes beside it; returns `canvas`, drawn in place."""
    thick = max(1, canvas.shape[1] // 700)
    for cell in cells:
        dashed = cell.status in ("false", "missed")
        outline(canvas, cell.edges, cell.colour, thick, dashed=dashed)
    for cell in cells:
        if not cell.edges:
            continue
        # inside the cell's top left corner: neighbours' labels do not run into each other
        x, y, _, _ = cv2.boundingRect(np.concatenate(cell.edges))
        label(canvas, cell.lines(top), (x + 4, y + 4 + _line_height(canvas)), cell.colour)
    return canvas


def legend(width: int, classes: Sequence[int], marks: Sequence[str] = ()) -> np.ndarray:
    """A strip naming the colour of each class drawn, and of the truth marks used."""
    entries = [(f"{c} {CLASS_NAMES[c]}", CLASS_COLOURS[c]) for c in sorted(set(classes))]
    if "false" in marks:
        entries.append(("FALSE: no true cell at IoU 0.6", FALSE_COLOUR))
    if "missed" in marks:
        entries.append(("MISSED: a true cell no cell matches", MISSED_COLOUR))
    if not entries:
        entries.append(("no cells", MISSED_COLOUR))
    scale = max(0.4, width / 2400)
    row = int(26 * scale) + 4
    widest = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for t, _ in entries)
    per_row = max(1, width // (widest + row + 16))
    strip = np.full((row * (-(-len(entries) // per_row)) + 6, width, 3), 24, np.uint8)
    for i, (text, colour) in enumerate(entries):
        x = (i % per_row) * (width // per_row) + 6
        y = (i // per_row) * row + row
        cv2.rectangle(strip, (x, y - row + 8), (x + row - 10, y - 2), colour, -1)
        cv2.putText(strip, text, (x + row, y - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1)
    return strip


def prediction_picture(
    image: np.ndarray, cells: Sequence[CellMark], title: str, top: int = 3
) -> np.ndarray:
    """Composite with the cells drawn, beside the green channel with the same outlines, a title
    above and a legend below; `image` is H x W x 4 at display size, `cells` drawn on it."""
    left = draw_cells(composite(image), cells, top)
    right = green(image)
    for cell in cells:
        outline(right, cell.edges, cell.colour, 1, dashed=cell.status in ("false", "missed"))
    body = np.concatenate([left, np.full((left.shape[0], 6, 3), 255, np.uint8), right], axis=1)
    head = np.full((max(28, body.shape[1] // 60), body.shape[1], 3), 24, np.uint8)
    label(head, [title], (6, head.shape[0] - 8), (255, 255, 255))
    classes = [c.classes[0][0] for c in cells if c.classes]
    marks = [c.status for c in cells]
    return np.concatenate([head, body, legend(body.shape[1], classes, marks)], axis=0)


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """A square RGB thumbnail of an H x W x 3 picture (letterboxed, not stretched)."""
    small, _ = fit(image, size)
    out = np.zeros((size, size, 3), np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def encode_png(image: np.ndarray) -> bytes:
    """RGB (or grey) uint8 -> PNG bytes."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode a {image.shape} picture as PNG")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise OSError(f"could not encode a {image.shape} picture as JPEG")
    return buf.tobytes()
