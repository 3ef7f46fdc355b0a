import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from efficientdet.data.images import image_size, read_image
from efficientdet.data.sample import ImageError

ASTRONAUT = data.astronaut()


def decoded(path) -> np.ndarray:
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


def test_decodes_every_mode_to_rgb_uint8(tmp_path):
    rgb = ASTRONAUT[:64, :96]
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(decoded(tmp_path / "grey.png"), np.dstack([grey] * 3))

    Image.fromarray(np.dstack([rgb, np.full(grey.shape, 77, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decoded(tmp_path / "rgba.png"), rgb)  # alpha dropped

    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "palette.png", transparency=0)
    np.testing.assert_array_equal(decoded(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))

    deep = grey.astype(np.uint16) * 257 + 100  # 16-bit, not a plain multiple of 257
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(decoded(tmp_path / "deep.png"), np.dstack([deep >> 8] * 3).astype(np.uint8))
    Image.fromarray(deep).save(tmp_path / "deep.tif")  # TIFF: the PIL fallback
    np.testing.assert_array_equal(decoded(tmp_path / "deep.tif"), np.dstack([deep >> 8] * 3).astype(np.uint8))

    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")  # BMP: the PIL fallback
    np.testing.assert_array_equal(decoded(tmp_path / "rgb.bmp"), rgb)

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    reference = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB")).astype(int)
    assert np.abs(decoded(tmp_path / "cmyk.jpg").astype(int) - reference).mean() < 1.0
    assert np.abs(decoded(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 4.0


@pytest.mark.parametrize("orientation, top_is_white", [(6, True), (8, False)])
def test_exif_orientation_decodes_upright(tmp_path, orientation, top_is_white):
    """Stored 80 wide x 40 high with a white left half; 6 rotates it 90° clockwise, 8 anticlockwise."""
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = decoded(path)
    assert image.shape == (80, 40, 3) and image_size(path) == (40, 80)
    top, bottom = image[:35].mean(), image[45:].mean()
    assert (top > 250 and bottom < 5) if top_is_white else (top < 5 and bottom > 250)


def test_corrupt_truncated_and_empty_files_raise_image_error(tmp_path):
    Image.fromarray(ASTRONAUT).save(tmp_path / "ok.jpg")
    whole = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    for name in ("truncated.jpg", "empty.jpg", "garbage.png", "missing.jpg"):
        with pytest.raises(ImageError, match=name):
            read_image(tmp_path / name)


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` with no pixel data: only a header read survives it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_cap_is_checked_before_decoding(tmp_path):
    png_header_only(tmp_path / "bomb.png", 12_000, 10_000)  # 120 MP, 360 MB decoded
    with pytest.raises(ImageError, match=r"bomb.png: 12000x10000 is 120000000 pixels, over the limit of 100000000 \(max_pixels, 100 MP\)"):
        read_image(tmp_path / "bomb.png")
    png_header_only(tmp_path / "huge.png", 100_000, 100_000)  # past PIL's own limit as well
    with pytest.raises(ImageError, match="huge.png"):
        read_image(tmp_path / "huge.png")
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="20x10 is 200 pixels, over the limit"):
        read_image(tmp_path / "small.png", max_pixels=199)


def test_encoded_bytes_read_as_the_file_does(tmp_path):
    """A server's upload: the same pixels as from the file, errors named by ``name`` and free of
    the in-memory file's repr, the pixel limit refused from the header as its own error type."""
    from efficientdet.data.images import TooManyPixels

    path = tmp_path / "a.jpg"
    Image.fromarray(ASTRONAUT[:64, :96]).save(path, quality=90)
    body = path.read_bytes()
    assert torch.equal(read_image(body), read_image(path)) and image_size(body) == (96, 64)
    with pytest.raises(ImageError, match=r"^upload: cannot read the image header \(cannot identify image file\)$"):
        read_image(b"not an image", name="upload")
    with pytest.raises(ImageError, match="^image: cannot decode the image"):
        read_image(body[: len(body) // 2])
    with pytest.raises(TooManyPixels, match="96x64 is 6144 pixels, over the limit of 6000"):
        read_image(body, max_pixels=6000)
