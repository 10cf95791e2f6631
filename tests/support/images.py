"""Images made for tests: plain ones of any size, mode and format, and hostile ones."""

import io
import struct
import zlib

from PIL import Image


def image_bytes(size=(400, 300), mode="RGB", color=(200, 30, 30), fmt="JPEG", **save):
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **save)
    return out.getvalue()


def png_bomb(width: int = 200_000, height: int = 200_000) -> bytes:
    """A 100-byte PNG whose header declares width x height pixels (40 gigapixels by default)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
