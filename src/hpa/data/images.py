"""Reading the four channel files of one HPA sample into an H x W x 4 uint8 array."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hpa.errors import InputError
from hpa.fsio import write_bytes
from hpa.inputs import check_id, read_bytes

# Channel order everywhere in hpa: red (microtubules), green (protein), blue (nucleus), yellow (ER).
CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")

cv2.setNumThreads(1)  # DataLoader workers parallelise; OpenCV's own pool would oversubscribe.


def channel_path(image_dir: str | Path, sample_id: str, channel: str) -> Path:
    """The file of one channel, whichever supported extension it has."""
    image_dir = Path(image_dir)
    check_id(sample_id, f"sample in {image_dir}")  # a name, never a path out of image_dir
    for ext in EXTENSIONS:
        path = image_dir / f"{sample_id}_{channel}{ext}"
        if path.exists():
            return path
    raise InputError(
        f"missing image {image_dir / f'{sample_id}_{channel}.png'} (also tried {', '.join(EXTENSIONS[1:])}); "
        "every sample needs red, green, blue and yellow files"
    )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit as is; 16-bit scaled by 255/65535 (not clipped); float assumed in [0, 1]."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported pixel type {image.dtype}; expected 8- or 16-bit images")


# The largest image hpa decodes when nothing states its size (HPA images are at most 3072 px a
# side): a crafted PNG must not make OpenCV allocate gigabytes. A sample submission's row states
# the size; predict passes that instead.
MAX_PIXELS = 8192 * 8192


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding its pixels; None if unknown."""
    import io
    import warnings

    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header only: ours decides
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Exception:  # a format PIL does not read (OpenCV may): no header check
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(data: bytes, name: str | Path, max_pixels: int) -> None:
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(
            f"{name} says it is {size[0]}x{size[1]} px, more than the {max_pixels:,} pixels "
            "allowed here (its row's size, or 8192x8192); the file is damaged or crafted"
        )


def read_channel(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One grayscale channel as uint8. Colour files (some public HPA JPGs) keep their brightest plane."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"missing image {path}")
    # A regular file read within HPA_READ_TIMEOUT: a FIFO or a stalled mount is one line.
    return decode_channel(read_bytes(path, "image"), path, max_pixels)


def decode_channel(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """read_channel for a file's bytes (e.g. a member of the competition's zip), same pixels.
    Decoded only when its header's size is within `max_pixels` (bounded decoding)."""
    check_pixels(data, name, max_pixels)
    return _as_plane(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), name)


def _as_plane(image: np.ndarray | None, name: str | Path) -> np.ndarray:
    if image is None or image.size == 0:
        raise InputError(
            f"cannot decode {name}: the file is corrupt or not an image; re-download or remove it"
        )
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    return to_uint8(image)


def read_sample(
    image_dir: str | Path, sample_id: str, size: int | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """H x W x 4 uint8 (red, green, blue, yellow), resized to size x size with area interpolation.
    `max_pixels`: no channel larger than this is decoded (predict: the row's stated size)."""
    planes = []
    for channel in CHANNELS:
        path = channel_path(image_dir, sample_id, channel)
        planes.append((path.name, read_channel(path, max_pixels)))
    return stack_sample(planes, sample_id, size)


def stack_sample(
    planes: list[tuple[str, np.ndarray]], sample_id: str, size: int | None = None
) -> np.ndarray:
    """(file name, plane) per channel in CHANNELS order -> H x W x 4, resized like read_sample."""
    shapes = {plane.shape for _, plane in planes}
    if len(shapes) > 1:
        detail = ", ".join(f"{name}: {a.shape[1]}x{a.shape[0]}" for name, a in planes)
        raise InputError(
            f"channel sizes disagree for sample {sample_id} ({detail}); re-export the sample"
        )
    image = np.stack([plane for _, plane in planes], axis=-1)
    if size is not None and image.shape[:2] != (size, size):
        image = resize(image, size)
    return image


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize; area interpolation when shrinking (no aliasing), linear when growing."""
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    channels = image.shape[2] if image.ndim == 3 else 1
    if channels <= 4:
        return cv2.resize(image, (size, size), interpolation=interp).reshape(
            size, size, *image.shape[2:]
        )
    return np.stack(
        [cv2.resize(image[..., c], (size, size), interpolation=interp) for c in range(channels)],
        axis=-1,
    )


def write_channel(path: str | Path, plane: np.ndarray) -> None:
    """Write one channel atomically (hpa.fsio) so a kill never leaves half a PNG.

    Encoded in memory first: a full disk then shows as an out-of-space error naming the folder,
    where cv2.imwrite would only return False.
    """
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, plane)
    if not ok:
        raise OSError(f"could not encode a {plane.shape} {plane.dtype} image as {path.name}")
    write_bytes(path, buf.tobytes())
