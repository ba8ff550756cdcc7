"""Greyscale PNG files from raw 8-bit pixels, with the standard library only (the image
preparation reads JPEG and PNG; tests and scripts use this to make inputs for it)."""
import struct
import zlib


def write_grey_png(path, width, height, pixels):
    """Writes `pixels` (width * height bytes, row by row) as an 8-bit greyscale PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + pixels[width * r:width * (r + 1)] for r in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
