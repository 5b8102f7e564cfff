import cv2
import numpy as np
import pytest

from hpa.data.images import CHANNELS, read_sample, to_uint8
from hpa.errors import InputError


def write_sample(folder, sample_id, planes, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for channel, plane in zip(CHANNELS, planes, strict=True):
        assert cv2.imwrite(str(folder / f"{sample_id}_{channel}{ext}"), plane)


def planes_8bit(size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(4)]


def test_reads_four_channels_in_rgby_order(tmp_path):
    planes = planes_8bit()
    write_sample(tmp_path, "s1", planes)
    image = read_sample(tmp_path, "s1")
    assert image.shape == (32, 32, 4) and image.dtype == np.uint8
    for c in range(4):
        np.testing.assert_array_equal(image[..., c], planes[c])


def test_16bit_is_scaled_not_clipped(tmp_path):
    plane16 = np.full((16, 16), 65535, dtype=np.uint16)
    plane16[0, 0] = 32896  # ~ half scale
    plane16[0, 1] = 1000  # would clip to 255 if cast naively
    write_sample(tmp_path, "s16", [plane16] * 4)
    image = read_sample(tmp_path, "s16")
    assert image[1, 1, 0] == 255
    assert image[0, 0, 0] == 128
    assert image[0, 1, 0] == 4  # 1000 * 255 / 65535 ~ 3.9


def test_tif_and_jpg(tmp_path):
    planes = planes_8bit()
    write_sample(tmp_path, "t", planes, ext=".tif")
    np.testing.assert_array_equal(read_sample(tmp_path, "t")[..., 2], planes[2])
    smooth = [np.full((32, 32), v, dtype=np.uint8) for v in (10, 80, 150, 220)]
    write_sample(tmp_path, "j", smooth, ext=".jpg")
    image = read_sample(tmp_path, "j")
    assert np.abs(image.astype(int).mean(axis=(0, 1)) - [10, 80, 150, 220]).max() <= 2


def test_colour_jpg_keeps_its_signal_plane(tmp_path):
    # Public HPA JPGs store e.g. the red channel as red-on-black colour images.
    colour = np.zeros((8, 8, 3), dtype=np.uint8)
    colour[..., 2] = 200  # BGR: red plane
    for channel in CHANNELS:
        cv2.imwrite(str(tmp_path / f"c_{channel}.png"), colour)
    assert read_sample(tmp_path, "c")[0, 0, 0] == 200


def test_resize_uses_requested_size(tmp_path):
    write_sample(tmp_path, "s", planes_8bit(64))
    assert read_sample(tmp_path, "s", size=16).shape == (16, 16, 4)


def test_missing_channel_names_the_file(tmp_path):
    write_sample(tmp_path, "m", planes_8bit())
    (tmp_path / "m_yellow.png").unlink()
    with pytest.raises(InputError, match="m_yellow"):
        read_sample(tmp_path, "m")


def test_corrupt_file_names_the_file(tmp_path):
    write_sample(tmp_path, "c", planes_8bit())
    (tmp_path / "c_green.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="c_green.png"):
        read_sample(tmp_path, "c")


def test_disagreeing_sizes_are_reported(tmp_path):
    planes = planes_8bit()
    planes[3] = planes[3][:16]
    write_sample(tmp_path, "d", planes)
    with pytest.raises(InputError, match="disagree"):
        read_sample(tmp_path, "d")


def test_to_uint8_rejects_other_types():
    with pytest.raises(InputError):
        to_uint8(np.zeros((2, 2), dtype=np.int64))
