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
    """RGB; transparent areas become white rather than black (prints and drawings on paper)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image
