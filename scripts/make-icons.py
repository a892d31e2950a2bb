#!/usr/bin/env python3
"""Draws icons/icon{16,32,48,128}.png: a blue rounded square with a white speech bubble
and a highlight stroke (an annotated page), anti-aliased by 4x4 supersampling. Stdlib only."""
import struct, zlib, pathlib

def png(size, pixels):
    raw = b"".join(b"\0" + bytes(pixels[y * size * 4:(y + 1) * size * 4]) for y in range(size))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")

def inside_rounded(x, y, x0, y0, x1, y1, r):
    cx, cy = min(max(x, x0 + r), x1 - r), min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r and x0 <= x <= x1 and y0 <= y <= y1

def color(x, y):  # unit square coordinates
    if not inside_rounded(x, y, 0, 0, 1, 1, 0.22):
        return None
    bubble = inside_rounded(x, y, 0.18, 0.2, 0.82, 0.7, 0.12) or (0.28 <= x <= 0.42 and 0.66 <= y <= 0.84 and y - 0.66 <= (0.42 - x) * 1.3)
    if bubble:
        if 0.3 <= x <= 0.7 and 0.36 <= y <= 0.42:
            return (255, 196, 0)
        if 0.3 <= x <= 0.6 and 0.5 <= y <= 0.55:
            return (120, 140, 220)
        return (255, 255, 255)
    return (59, 91, 219)

for size in (16, 32, 48, 128):
    px, ss = [], 4
    for y in range(size):
        for x in range(size):
            acc, n = [0, 0, 0], 0
            for sy in range(ss):
                for sx in range(ss):
                    c = color((x + (sx + 0.5) / ss) / size, (y + (sy + 0.5) / ss) / size)
                    if c:
                        acc = [a + b for a, b in zip(acc, c)]
                        n += 1
            px += [a // n for a in acc] + [255 * n // (ss * ss)] if n else [0, 0, 0, 0]
    pathlib.Path(f"icons/icon{size}.png").write_bytes(png(size, px))
