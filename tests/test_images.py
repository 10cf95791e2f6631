import io
import os

import pytest
from PIL import Image

from artdate.core.images import ImageRejected, encode_image
from tests.support.helpers import SAMPLE_IMAGES, requires_sample
from tests.support.images import image_bytes, png_bomb

SAMPLE_IMAGE = os.path.join(SAMPLE_IMAGES, "aic_866.jpg")  # 419x512


def decoded(jpg):
    image = Image.open(io.BytesIO(jpg))
    assert image.format == "JPEG" and image.mode == "RGB"
    return image


@requires_sample
def test_shrinks_the_shorter_side_keeping_the_aspect():
    with open(SAMPLE_IMAGE, "rb") as f:
        jpg, width, height = encode_image(f.read(), size=224)
    assert (width, height) == (224, 274)  # 419x512 scaled by 224/419
    assert decoded(jpg).size == (224, 274)


def test_never_upscales():
    jpg, width, height = encode_image(image_bytes((120, 90)), size=224)
    assert (width, height) == (120, 90)


# Every kind of image Pillow reads becomes RGB: grey, CMYK, palette, 16-bit grey, grey + alpha.
@pytest.mark.parametrize(
    "mode, color",
    [
        ("L", 128),
        ("CMYK", (0, 255, 255, 0)),
        ("P", 3),
        ("I;16", 40000),
        ("LA", (100, 128)),
        ("RGBA", (10, 20, 30, 255)),
    ],
)
def test_converts_to_rgb(mode, color):
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    jpg, _, _ = encode_image(image_bytes((64, 64), mode, color, fmt), size=32)
    assert decoded(jpg).size == (32, 32)


def test_transparent_becomes_white_not_black():
    jpg, _, _ = encode_image(image_bytes((50, 50), "RGBA", (0, 0, 0, 0), "PNG"), size=50)
    assert min(decoded(jpg).getpixel((25, 25))) > 240


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (400, 200), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    _, width, height = encode_image(out.getvalue(), size=100)
    assert (width, height) == (100, 200)


def test_rejects_empty_data():
    with pytest.raises(ImageRejected, match="empty file"):
        encode_image(b"", size=224)


def test_rejects_what_is_not_an_image():
    with pytest.raises(ImageRejected, match="not an image"):
        encode_image(b"<html>Not found</html>", size=224)


def test_rejects_a_truncated_jpeg():
    data = image_bytes((800, 600))
    with pytest.raises(ImageRejected, match="corrupt or truncated"):
        encode_image(data[: len(data) // 2], size=224)


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = png_bomb()
    assert len(bomb) < 200
    with pytest.raises(ImageRejected, match="too many pixels|over the limit"):
        encode_image(bomb, size=224)


def test_rejects_too_many_pixels_before_decoding():
    # A PNG header claiming 30000x30000 pixels: rejected from the header, nothing is decoded.
    bomb = image_bytes((30000, 30000), "1", 0, "PNG")
    with pytest.raises(ImageRejected, match=r"30000x30000 is over the limit of 100000000 pixels|too many pixels"):
        encode_image(bomb, size=224)
    with pytest.raises(ImageRejected, match="over the limit of 1000 pixels"):
        encode_image(image_bytes((100, 100)), size=50, max_pixels=1000)


def test_a_16_bit_grey_scan_keeps_its_grey_not_a_white_square():
    # The reproduction of issue 36: Pillow's convert("RGB") clipped 20000 to 255.
    import numpy as np

    jpg, _, _ = encode_image(image_bytes((300, 300), "I;16", 20000, "PNG"), size=96)
    assert set(np.unique(np.asarray(decoded(jpg)))) <= {76, 77, 78}  # 20000 / 65535 * 255

    ramp = Image.fromarray(np.tile(np.linspace(1000, 4000, 300), (200, 1)).astype(np.uint16))  # 12-bit data
    out = io.BytesIO()
    ramp.save(out, "PNG")
    grey = decoded(encode_image(out.getvalue(), size=100)[0]).convert("L")
    assert grey.getpixel((0, 50)) < 10 and grey.getpixel((149, 50)) > 245  # stretched over its own range


def test_max_pixels_above_pillows_own_bomb_limit_is_the_limit_that_counts():
    out = io.BytesIO()
    Image.new("L", (15000, 12000), 128).save(out, "JPEG", quality=5)  # 180 MP: over Pillow's 178,956,970
    _, width, height = encode_image(out.getvalue(), size=64, max_pixels=200_000_000)
    assert (width, height) == (80, 64)
    with pytest.raises(ImageRejected, match="15000x12000 is over the limit of 100000000 pixels"):
        encode_image(out.getvalue(), size=64)
