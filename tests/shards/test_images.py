"""Hostile and odd inputs to the per-image converter."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from spotart.shards.images import BadImage, convert, process

LIMIT = 89_478_485


def enc(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def decode(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rgb(w=40, h=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def bomb_png(w=100_000, h=100_000):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_baseline_rgb_jpeg_passes_through_unchanged():
    data = enc(rgb(), "JPEG", quality=80)
    out, info = convert(data, None, 95, LIMIT)
    assert out == data and info["passthrough"]


def test_progressive_jpeg_is_reencoded_as_baseline():
    data = enc(rgb(), "JPEG", progressive=True)
    out, info = convert(data, None, 95, LIMIT)
    assert not info["passthrough"] and not decode(out).info.get("progressive")


@pytest.mark.parametrize("bad,reason", [
    (b"", "empty"),
    (b"this is a text file, not an image\n" * 3, "not an image"),
    (np.random.default_rng(0).bytes(5000), "not an image"),
])
def test_unreadable_bytes_raise_with_reason(bad, reason):
    with pytest.raises(BadImage, match=reason):
        convert(bad, None, 95, LIMIT)


def test_truncated_jpeg_and_png_are_rejected():
    for fmt in ("JPEG", "PNG"):
        data = enc(rgb(64, 64), fmt)
        with pytest.raises(BadImage):
            convert(data[: len(data) // 2], None, 95, LIMIT)


def test_decompression_bomb_is_rejected_without_decoding():
    with pytest.raises(BadImage, match="bomb"):
        convert(bomb_png(), None, 95, LIMIT)
    with pytest.raises(BadImage, match="bomb"):
        convert(enc(rgb(40, 30), "PNG"), None, 95, 1000)  # over a user-set limit


@pytest.mark.parametrize("make", [
    lambda: Image.new("L", (20, 10), 77),
    lambda: Image.new("CMYK", (20, 10), (0, 255, 0, 0)),
    lambda: Image.new("P", (20, 10), 3),
    lambda: Image.new("RGBA", (20, 10), (10, 20, 30, 128)),
    lambda: Image.new("LA", (20, 10), (10, 0)),
])
def test_modes_become_8bit_rgb(make):
    img = make()
    fmt = "JPEG" if img.mode in ("L", "CMYK") else "PNG"
    out, info = convert(enc(img, fmt), None, 95, LIMIT)
    im = decode(out)
    assert im.mode == "RGB" and im.format == "JPEG" and im.size == (20, 10) and not info["passthrough"]


def test_cmyk_colour_is_right():
    # pure magenta ink -> (255, 0, 255) in RGB
    out, _ = convert(enc(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG", quality=100), None, 100, LIMIT)
    px = np.asarray(decode(out))[8, 8].astype(int)
    assert np.abs(px - [255, 0, 255]).max() < 12


def test_16bit_png_scales_full_range():
    a = np.array([[0, 65535], [32896, 65535]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    out, _ = convert(enc(Image.fromarray(a), "PNG"), None, 100, LIMIT)
    px = np.asarray(decode(out))[:, :, 0]
    assert px[0, 0] < 5 and px[0, 15] > 250 and abs(int(px[15, 0]) - 128) < 5


def test_alpha_composited_over_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    px = np.asarray(decode(convert(enc(img, "PNG"), None, 100, LIMIT)[0]))
    assert px.min() > 245


def test_palette_with_transparency_and_animated_gif_first_frame():
    frames = [Image.new("P", (12, 12), i) for i in (1, 2, 3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    out, info = convert(gif.getvalue(), None, 95, LIMIT)
    assert decode(out).size == (12, 12) and info["size"] == [12, 12]


def test_exif_orientation_is_applied():
    img = rgb(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out, info = convert(enc(img, "JPEG", exif=exif), None, 95, LIMIT)
    assert decode(out).size == (20, 40) and info["stored"] == [20, 40]


def test_resize_downscales_shorter_side_only():
    out, info = convert(enc(rgb(200, 100), "PNG"), 50, 90, LIMIT)
    assert decode(out).size == (100, 50)
    out, info = convert(enc(rgb(40, 30), "JPEG"), 50, 90, LIMIT)
    assert info["passthrough"] and info["stored"] == [40, 30]  # never upscaled


def test_process_reports_hash_and_reason(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"nope")
    seq, digest, jpg, reason = process((7, str(p), None, 95, LIMIT))
    assert seq == 7 and len(digest) == 64 and jpg is None and "not an image" in reason
    seq, digest, jpg, reason = process((8, str(tmp_path / "missing.jpg"), None, 95, LIMIT))
    assert digest is None and reason.startswith("cannot read")
