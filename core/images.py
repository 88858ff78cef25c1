"""The single validation path for every image before a model sees it.

Web uploads, files given to the command-line classifier and the training images all go through
:func:`read_image`, which either returns a fresh 8-bit RGB :class:`PIL.Image.Image` or raises
:class:`ImageError` with a one-line, user-facing message. Bad input never raises anything else
(a wrong *argument type* is a programming error and raises ``TypeError``).

Hostile input is bounded before any decoding work:

* the byte size is checked before the data is read where possible (``os.stat`` for paths, ``.size`` or
  the stream length for uploads), and reading never goes past ``MAX_FILE_BYTES + 1`` bytes;
* only the formats in ``ALLOWED_FORMATS`` are even offered to Pillow (no EPS/Ghostscript, PSD, ...);
* the declared ``width * height`` is checked against ``MAX_PIXELS`` from the header, before decoding,
  independently of Pillow's own (larger, warning-only) ``Image.MAX_IMAGE_PIXELS``, which is left untouched.
  JPEGs are the exception that phone photos need: libjpeg can decode at 1/2, 1/4 or 1/8 scale (Pillow's
  ``Image.draft``), so a JPEG above ``MAX_PIXELS`` is decoded at the largest of those scales that fits in
  ``MAX_PIXELS`` (a 200 MP photo at 1/4: 12.5 MP), which the models' 224-px input never misses. Only a JPEG
  still above the limit at 1/8 (over 2560 MP) is refused. Every other format (PNG, WebP, HEIF, ...) cannot
  decode at reduced size and keeps the header check and Pillow's decompression-bomb protection.

HEIC/HEIF (what phones save by default) is read through pillow-heif's Pillow plugin.

Every colour mode is normalised to 8-bit RGB: transparency is flattened onto white, 16-bit grey is
scaled by its full range (65535 -> 255), float images are stretched from their min..max.

Resize policy (training and inference alike): :data:`RESIZE_POLICY` = ``"squash-bilinear"``, i.e. the
image is *squashed* (aspect ratio not preserved, no crop, no padding) to ``size x size`` with bilinear
resampling and ``reducing_gap=None``. See :func:`to_array`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from typing import IO, Union

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, JpegImagePlugin

pillow_heif.register_heif_opener()

# Phone photos: a 108 or 200 MP JPEG at a phone's quality weighs 15-50 MB (a 200 MP photo with mild sensor
# noise at quality 95: 25 MB); the pixel limit below, not this one, bounds the decoded memory.
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 16
MAX_ASPECT = 8.0
# Pillow format names. MPO is what some cameras' JPEGs (multi-picture) open as; HEIF (pillow-heif) covers
# .heic and .heif files.
ALLOWED_FORMATS = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF"}
# File name suffixes of photos offered by the uploader and found by dataset folder scans (lower case, with
# the dot). GIF and TIFF are read when given but not looked for: photos do not come in them.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif")
# libjpeg's reduced decoding scales (Image.draft picks one of 1/1, 1/2, 1/4, 1/8).
_JPEG_SCALES = (1, 2, 4, 8)
RESIZE_POLICY = "squash-bilinear"

Source = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", "os.PathLike[bytes]", IO[bytes]]

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)
# EXIF orientation -> transpose that displays the image upright (as in ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Signatures of common image formats we do not accept, only to word the message precisely.
_MAGIC = (
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"gimp xcf", "XCF"),
)
_FTYP_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"jp2 ": "JPEG 2000",
    b"crx ": "CR3 (camera raw)",
}
# Brands of the HEIF files pillow-heif reads: one it could not identify is a broken file, not another format.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}


class ImageError(ValueError):
    """A bad image. ``str()`` is a one-line, specific, user-facing message without the file name.

    ``source_name`` holds the ``name`` given to :func:`read_image` (or the file's own name), if any, so
    callers can prefix it: ``f"{err.source_name}: {err}"``.
    """

    def __init__(self, message: str, source_name: str | None = None):
        message = " ".join(str(message).split()) or "invalid image"
        super().__init__(message)
        self.source_name = source_name


# ----------------------------------------------------------------------------------------------- helpers


def _fmt_bytes(n: float, exact: bool) -> str:
    """55.0 MB / 20 MB style; exact=False drops a trailing .0 (used for limits)."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if exact else f"{value:g} {unit}"
    return f"{int(n)} bytes"


def _too_large_file(n: int) -> ImageError:
    return ImageError(f"file is too large: {_fmt_bytes(n, True)} (limit {_fmt_bytes(MAX_FILE_BYTES, False)})")


def _too_large_image(size: tuple[int, int] | None, pixels: int | None = None) -> ImageError:
    limit = f"limit {MAX_PIXELS / 1_000_000:g} MP"
    if size is not None:
        return ImageError(f"image is too large: {size[0]}x{size[1]} pixels ({limit})")
    if pixels is not None:
        return ImageError(f"image is too large: {pixels / 1_000_000:.0f} MP ({limit})")
    return ImageError(f"image is too large ({limit})")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "data", text)
    text = " ".join(text.split())
    if not text:
        text = type(exc).__name__
    return text[:120] + ("..." if len(text) > 120 else "")


def _corrupt(exc: BaseException) -> ImageError:
    return ImageError(f"file is truncated or corrupt: {_reason(exc)}")


def _sniff_unsupported(data: bytes) -> str | None:
    """Name of a known image format we do not accept, from its signature; None if unknown."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "PNM"
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12])
    head = data[:1024].lstrip().lower()
    if (head.startswith(b"<?xml") or head.startswith(b"<svg")) and b"<svg" in head:
        return "SVG"
    return None


def _allowed_formats() -> tuple[str, ...]:
    """The allowed formats that Pillow can open, JPEG and PNG first (the common ones).

    MPO has no opener of its own: Pillow's JPEG opener returns an MPO image when it finds the MP header.
    """
    Image.init()  # registers all plugins once; a no-op afterwards
    fmts = (f for f in ALLOWED_FORMATS if f in Image.OPEN)
    return tuple(sorted(fmts, key=lambda f: (f != "JPEG", f != "PNG", f)))


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Header dimensions of an image that Image.open refused as a decompression bomb (message only)."""
    try:
        prefix = data[:16]
        for fmt in _allowed_formats():
            factory, accept = Image.OPEN.get(fmt, (None, None))
            if factory is None:
                continue
            accepted = accept(prefix) if accept else True
            if not accepted or isinstance(accepted, str):
                continue
            try:
                im = factory(io.BytesIO(data), "")
            except Exception:
                continue
            size = im.size
            im.close()
            return size
    except Exception:
        pass
    return None


def _bomb(data: bytes, exc: BaseException) -> ImageError:
    size = _declared_size(data)
    if size is not None:
        return _too_large_image(size)
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return _too_large_image(None, int(m.group(1)) if m else None)


# ----------------------------------------------------------------------------------------------- reading


def _read_limited(stream: IO[bytes]) -> bytes:
    data = stream.read(MAX_FILE_BYTES + 1)
    if isinstance(data, str):
        raise TypeError("read_image needs a binary file object, not a text one")
    if data is None:
        data = b""
    if len(data) > MAX_FILE_BYTES:
        raise _too_large_file(len(data))
    return bytes(data)


def _read_path(path: str | bytes) -> bytes:
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror or _reason(err)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("cannot read file: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("cannot read file: not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise _too_large_file(st.st_size)
    try:
        with open(path, "rb") as fh:
            return _read_limited(fh)  # the file may have grown since stat
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror or _reason(err)}") from None


def _read_stream(stream) -> bytes:
    declared = getattr(stream, "size", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > MAX_FILE_BYTES:
        raise _too_large_file(declared)
    getvalue = getattr(stream, "getvalue", None)
    if callable(getvalue):  # BytesIO / Streamlit UploadedFile: already in memory, position-independent
        data = getvalue()
        if isinstance(data, str):
            raise TypeError("read_image needs a binary file object, not a text one")
        if len(data) > MAX_FILE_BYTES:
            raise _too_large_file(len(data))
        return bytes(data)
    try:
        if stream.seekable():
            here = stream.tell()
            remaining = stream.seek(0, os.SEEK_END) - here
            stream.seek(here)
            if remaining > MAX_FILE_BYTES:
                raise _too_large_file(remaining)
    except (AttributeError, OSError, ValueError):
        pass
    try:
        return _read_limited(stream)
    except OSError as err:
        raise ImageError(f"cannot read file: {err.strerror or _reason(err)}") from None


def _read_source(source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        n = memoryview(source).nbytes
        if n > MAX_FILE_BYTES:
            raise _too_large_file(n)
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return _read_path(os.fspath(source))
    if callable(getattr(source, "read", None)) or callable(getattr(source, "getvalue", None)):
        return _read_stream(source)
    raise TypeError(f"read_image expects bytes, a path or a binary file object, not {type(source).__name__}")


# -------------------------------------------------------------------------------------------- conversion


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8)).convert("RGB")


def _scale_16(arr: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded (65535 -> 255, 32768 -> 128)."""
    wide = arr.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Linear min..max -> 0..255; a constant image keeps its value, clipped to 0..255."""
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.full(arr.shape, np.clip(round(lo), 0, 255), dtype=np.uint8)
    out = (arr.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _flatten(rgba: Image.Image) -> Image.Image:
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> a new 8-bit RGB image (raises ImageError for what cannot be converted)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        if mode == "I;16S" or mode == "I":
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
                return _gray_to_rgb(_stretch(arr))
        return _gray_to_rgb(_scale_16(arr))
    if mode == "F":
        arr = np.asarray(im)
        if arr.size and not np.isfinite(arr).all():
            raise ImageError("unsupported float image: contains NaN or infinite values")
        return _gray_to_rgb(_stretch(arr) if arr.size else arr.astype(np.uint8))
    if mode == "La":
        im, mode = im.convert("LA"), "LA"
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return _flatten(im.convert("RGBA"))
    return im.convert("RGB")


def _apply_orientation(source: Image.Image, rgb: Image.Image) -> Image.Image:
    """Apply the EXIF (or XMP/TIFF) orientation of ``source`` to ``rgb``, like ImageOps.exif_transpose.

    Unreadable or out-of-range orientation metadata is ignored: the pixels are fine, only the tag is not.
    """
    try:
        orientation = source.getexif().get(ExifTags.Base.Orientation)
    except Exception:
        return rgb
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return rgb.transpose(method) if method is not None else rgb


def _open_jpeg_reduced(data: bytes) -> Image.Image | None:
    """A JPEG opened without Pillow's bomb check and set to decode at a scale within MAX_PIXELS.

    None when ``data`` is not a JPEG or its header cannot be parsed (Image.open then words the error).
    Raises ImageError when even 1/8 scale stays above MAX_PIXELS. Bypassing ``Image.open``'s bomb check is
    safe here only because ``draft`` bounds the decoded size before anything is decoded.
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        im = JpegImagePlugin.jpeg_factory(io.BytesIO(data))
    except Exception:
        return None
    width, height = im.size
    scale = next((s for s in _JPEG_SCALES if -(-width // s) * -(-height // s) <= MAX_PIXELS), None)
    if scale is None:
        im.close()
        raise _too_large_image((width, height))
    if scale > 1:
        im.draft(None, (width // scale, height // scale))  # decodes to ceil(side / scale)
    return im


def _decode(data: bytes) -> Image.Image:
    try:
        im = _open_jpeg_reduced(data) or Image.open(io.BytesIO(data), formats=_allowed_formats())
    except ImageError:
        raise
    except Image.UnidentifiedImageError:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            raise ImageError("file is truncated or corrupt: HEIF data that pillow-heif cannot read") from None
        other = _sniff_unsupported(data)
        if other:
            raise ImageError(
                f"unsupported image format: {other} (supported: {', '.join(sorted(ALLOWED_FORMATS - {'MPO'}))})"
            ) from None
        raise ImageError("not an image file (could not identify the format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _bomb(data, err) from None
    except MemoryError:
        raise _too_large_image(None) from None
    except Exception as err:
        raise _corrupt(err) from None

    with im:
        fmt = im.format
        if fmt not in ALLOWED_FORMATS:
            raise ImageError(f"unsupported image format: {fmt or 'unknown'}")
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise _too_large_image((width, height))
        try:
            im.load()  # the first frame of animated images: a freshly opened image is at frame 0
            rgb = _to_rgb(im)
            rgb = _apply_orientation(im, rgb)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb(data, err) from None
        except MemoryError:
            raise _too_large_image((width, height)) from None
        except ValueError as err:
            if "conversion" in str(err) and "not supported" in str(err):
                raise ImageError(f"unsupported colour mode: {im.mode}") from None
            raise _corrupt(err) from None
        except Exception as err:  # OSError (truncated), SyntaxError (broken PNG), EOFError, struct.error, ...
            raise _corrupt(err) from None
    rgb.info = {}  # detached: no file, no stale EXIF orientation to be applied twice
    return rgb


def _check_shape(im: Image.Image) -> None:
    w, h = im.size
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"image is too small: {w}x{h} pixels (minimum {MIN_SIDE}x{MIN_SIDE})")
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ASPECT:
        raise ImageError(f"extreme aspect ratio {round(ratio, 1):g}:1 (maximum {MAX_ASPECT:g}:1)")


# ------------------------------------------------------------------------------------------------- API


def read_image(source: Source, *, name: str | None = None) -> Image.Image:
    """Read, validate and normalise one image; return a fresh 8-bit RGB image detached from the source.

    ``source`` is ``bytes`` (or bytearray/memoryview), a path (``str`` / ``os.PathLike``) or a binary
    file-like object (e.g. Streamlit's ``UploadedFile``; its ``.size`` is checked first and
    ``.getvalue()`` is used when present, otherwise it is read from its current position).

    Steps: byte size <= MAX_FILE_BYTES (before reading where possible); not empty; Pillow identifies one of
    ALLOWED_FORMATS; declared width*height <= MAX_PIXELS (before decoding); first frame fully decoded;
    converted to RGB (alpha flattened onto white, 16-bit scaled by 65535 -> 255, float stretched
    min..max); EXIF orientation applied; finally MIN_SIDE and MAX_ASPECT checked.

    Raises :class:`ImageError` for any bad input. Messages never contain the name; ``name`` (or the file
    object's / path's own name) is attached as ``err.source_name`` for the caller to prefix.
    """
    if name is None:
        if isinstance(source, (str, os.PathLike)):
            name = os.fsdecode(os.fspath(source))
        elif isinstance(getattr(source, "name", None), str):
            name = source.name
    try:
        data = _read_source(source)
        if not data:
            raise ImageError("image is empty (0 bytes)")
        image = _decode(data)
        _check_shape(image)
        return image
    except ImageError as err:
        err.source_name = name
        raise
    except MemoryError:
        raise ImageError("image is too large to decode (out of memory)", name) from None


def to_array(image: Image.Image, size: int) -> np.ndarray:
    """Resize by the RESIZE_POLICY ("squash-bilinear") and return a uint8 array of shape (size, size, 3).

    Squash: the whole image is scaled to ``size x size`` regardless of its aspect ratio (no crop, no
    padding), with ``Image.Resampling.BILINEAR`` and ``reducing_gap=None``. Used for training and
    inference alike. A non-RGB image is first converted as :func:`read_image` would.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, not {size!r}")
    size = int(size)
    if image.mode != "RGB":
        image = _to_rgb(image)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.array(resized, dtype=np.uint8)
    assert arr.shape == (size, size, 3), arr.shape
    return arr


def load_for_model(source: Source, size: int) -> tuple[Image.Image, np.ndarray]:
    """:func:`read_image` then :func:`to_array`: the validated RGB image and its model input array."""
    image = read_image(source)
    return image, to_array(image, size)


def image_digest(data: bytes) -> str:
    """SHA-256 hex digest of the raw bytes (cache key for results by upload)."""
    return hashlib.sha256(data).hexdigest()
