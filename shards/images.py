"""Decode, check and normalise one image to 8-bit RGB JPEG bytes.

Runs in the builder's worker processes. Everything that can go wrong with a file becomes a
`BadImage` with a one-line reason; nothing else escapes."""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Truncated files must fail, not decode to grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(Exception):
    pass


def _to_rgb8(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale: scale the full 16-bit range to 8 bits (PIL's convert would clip)
        a = np.asarray(img, dtype=np.float64)
        scale = 257.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 1.0
        a = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # transparent pixels are composited over white, the way a viewer shows them
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "CMYK":
        # Adobe CMYK JPEGs are stored inverted; PIL handles the inversion in convert()
        return img.convert("RGB")
    return img.convert("RGB") if mode != "RGB" else img


def convert(data: bytes, resize: int | None, quality: int, max_pixels: int) -> tuple[bytes, dict]:
    """-> (jpeg bytes, info). info: original (w, h), stored (w, h), passthrough flag."""
    if not data:
        raise BadImage("empty file")
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # PIL only warns between max_pixels and 2x; both are bombs for us
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(f"decompression bomb: {w}x{h} px is over the {max_pixels} px limit (--max-pixels)")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/TIFF: the first frame is the image
            img.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage(f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadImage(f"cannot decode: {msg}") from None
    if w < 1 or h < 1:
        raise BadImage(f"degenerate size {w}x{h}")

    orientation = img.getexif().get(0x0112, 1) if fmt in ("JPEG", "TIFF", "PNG", "WEBP") else 1
    needs_resize = resize is not None and min(w, h) > resize
    progressive = bool(img.info.get("progressive") or img.info.get("progression"))
    if fmt == "JPEG" and img.mode == "RGB" and orientation in (0, 1) and not needs_resize and not progressive:
        # fast path: a valid baseline RGB JPEG that needs no change keeps its original bytes
        return data, {"size": [w, h], "stored": [w, h], "passthrough": True}

    try:
        if orientation not in (0, 1):
            img = ImageOps.exif_transpose(img)
        img = _to_rgb8(img)
        if needs_resize:
            s = resize / min(img.size)
            new = (max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s)))
            img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False)
    except (OSError, ValueError) as err:
        raise BadImage(f"cannot convert: {err}") from None
    return buf.getvalue(), {"size": [w, h], "stored": list(img.size), "passthrough": False}


def read_bytes(payload) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    with open(payload, "rb") as f:
        return f.read()


def normalise(data: bytes, resize: int | None, quality: int, max_pixels: int):
    """-> (raw sha256 of the source bytes, jpeg bytes or None, info or the reason it failed)."""
    digest = hashlib.sha256(data).digest()
    try:
        jpg, info = convert(data, resize, quality, max_pixels)
    except BadImage as err:
        return digest, None, str(err)
    return digest, jpg, info


def process(task):
    """(seq, payload, resize, quality, max_pixels) ->
    (seq, sha256 of the source bytes or None, jpeg bytes or None, info or reason)."""
    seq, payload, resize, quality, max_pixels = task
    try:
        data = read_bytes(payload)
    except OSError as err:
        return seq, None, None, f"cannot read: {err.strerror or err}"
    digest, jpg, info = normalise(data, resize, quality, max_pixels)
    return seq, digest.hex(), jpg, info
