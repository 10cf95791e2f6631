"""Images in and out: decode anything Pillow reads as upright RGB within a pixel limit, shrink, encode JPEG.

pack stores images through `encode_image`; predict and the report open them with `open_rgb`.
"""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError


class ImageRejected(Exception):
    """The bytes are not a usable image; the message says why."""


def encode_image(data: bytes, size: int, quality: int = 90, max_pixels: int = 100_000_000) -> tuple[bytes, int, int]:
    """Decode, convert to RGB, shrink so the shorter side is `size` (never upscale), encode as JPEG."""
    image = open_rgb(data, max_pixels, draft_size=size)
    shorter = min(image.size)
    if shorter > size:
        scale = size / shorter
        new_size = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue(), image.width, image.height


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it; (0, 0) when it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0, 0


def open_rgb(data: bytes, max_pixels: int, draft_size: int = 0) -> Image.Image:
    """Any image Pillow reads (CMYK, 16-bit, palette, alpha, EXIF-rotated) as upright RGB, or
    ImageRejected. The pixel count is checked from the header, before anything is decoded, so a
    small file that would decode to gigapixels is refused without using the memory."""
    if not data:
        raise ImageRejected("empty file")
    # Pillow refuses anything over twice its own limit (178,956,970 pixels) as a bomb before this
    # function sees its size; the limit that counts is `max_pixels`, checked from the header below,
    # so Pillow's is raised to it (never lowered).
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not an image") from None
    except Image.DecompressionBombError as problem:
        raise ImageRejected(f"too many pixels: {problem}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"{width}x{height} is over the limit of {max_pixels} pixels")
    shorter = min(width, height)
    if draft_size and image.format == "JPEG" and shorter > draft_size:
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves >= size pixels: 2x faster.
        scale = draft_size / shorter
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as problem:
        raise ImageRejected(f"corrupt or truncated image: {problem}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, keeping the content of every mode Pillow opens: images deeper than 8 bits scaled by
    their range (_to_8_bits), transparent areas white rather than black (prints and drawings on
    paper); a mode with no way to RGB is refused by name."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8_bits(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode == "RGB":
        return image  # convert() would copy it
    try:
        return image.convert("RGB")
    except ValueError:
        raise ImageRejected(f"an image of mode {image.mode}, which has no conversion to RGB") from None


def _to_8_bits(image: Image.Image) -> Image.Image:
    """A greyscale image of 16- or 32-bit integers or of floats as 8-bit (L), stretched from its
    lowest value to its highest, so whatever range a scanner or camera used (the whole 16 bits,
    12 of them, a narrow band) keeps its content; a constant image keeps its level on the mode's
    own scale (65,535 for integers, 1 for floats). Pillow's own convert() clips at 255, which
    turns a 16-bit scan into a white square."""
    values = image.convert("F")
    low, high = values.getextrema()  # one band: two numbers
    assert isinstance(low, float) and isinstance(high, float)
    if high > low:
        offset, scale = low, 255 / (high - low)
    else:
        offset, scale = 0.0, 255 if image.mode == "F" else 255 / 65535
    return values.point(lambda value: (value - offset) * scale).convert("L")
