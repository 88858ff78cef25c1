"""Tests for core.images: every image goes through read_image, so hostile input must end in ImageError."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from core import images
from core.images import ImageError, read_image

NOT_AN_IMAGE = "not an image file (could not identify the format)"
SUPPORTED = "(supported: BMP, GIF, HEIF, JPEG, PNG, TIFF, WEBP)"
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


# ----------------------------------------------------------------------------------------------- helpers


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def error_of(source, **kw) -> str:
    """read_image must raise ImageError with a non-empty, single-line message; return the message."""
    with pytest.raises(ImageError) as info:
        read_image(source, **kw)
    msg = str(info.value)
    assert msg and msg.strip() == msg
    assert "\n" not in msg and "\r" not in msg
    return msg


def close(actual, expected, tol=0) -> bool:
    return all(abs(int(a) - int(e)) <= tol for a, e in zip(actual, expected))


def assert_rgb(im):
    assert isinstance(im, Image.Image)
    assert im.mode == "RGB"
    assert not isinstance(im, ImageFile.ImageFile)  # a fresh image, detached from any file


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR dimensions (and its CRC) of a valid PNG."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png_chunk(b"IHDR", ihdr) + png[33:]


@functools.lru_cache(maxsize=None)
def noise(size=(64, 64), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@functools.lru_cache(maxsize=None)
def valid_png() -> bytes:
    return encode(noise((32, 32)), "PNG")


@functools.lru_cache(maxsize=None)
def valid_jpeg() -> bytes:
    return encode(noise((32, 32)), "JPEG", quality=80)


def solid(color, size=(32, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


# -------------------------------------------------------------------------------------- not an image


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is a text file\n" * 20,
        b"name,label\napple.jpg,apple\n",
        np.random.default_rng(1).bytes(4096),
        b"\x89PNG",  # just a signature
        b"\xff\xd8\xff",  # just a JPEG start
    ],
    ids=["text", "csv", "random", "png-signature-only", "jpeg-start-only"],
)
def test_not_an_image(data):
    assert error_of(data) == NOT_AN_IMAGE


def test_empty():
    assert error_of(b"") == "image is empty (0 bytes)"
    assert error_of(io.BytesIO(b"")) == "image is empty (0 bytes)"


@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"%PDF-1.4\n%...", "PDF"),
        (b"8BPS\x00\x01" + b"\x00" * 40, "PSD"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + b"\x00" * 40, "AVIF"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    ],
)
def test_unsupported_format_by_signature(data, fmt):
    assert error_of(data) == f"unsupported image format: {fmt} {SUPPORTED}"


@pytest.mark.parametrize("fmt, name", [("ICO", "ICO"), ("PPM", "PNM"), ("EPS", "EPS")])
def test_unsupported_format_written_by_pillow(fmt, name):
    # Pillow could open these, but they are not offered to it (EPS would even run Ghostscript).
    assert error_of(encode(solid(RED), fmt)) == f"unsupported image format: {name} {SUPPORTED}"


def test_format_pillow_reads_but_not_allowed_without_signature():
    assert error_of(encode(solid(RED), "TGA")) == NOT_AN_IMAGE


# ---------------------------------------------------------------------------------- truncated / corrupt


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_half(fmt):
    data = encode(noise(), fmt)
    msg = error_of(data[: len(data) // 2])
    assert msg.startswith("file is truncated or corrupt: ")
    assert "truncated" in msg.split(": ", 1)[1]


def test_png_bad_crc_is_corrupt():
    data = bytearray(valid_png())
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # damage the compressed stream; the CRC no longer matches
    assert error_of(bytes(data)).startswith("file is truncated or corrupt: ")


# --------------------------------------------------------------------------------------------- sizes


def png_1bit_zeros(width: int, height: int) -> bytes:
    """A genuine, valid 1-bit PNG of any size, a few KB on disk (a decompression bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [7000, 10000, 50000])
def test_decompression_bomb_patched_header(side):
    # 7000^2 is above our 40 MP, 10000^2 above Pillow's warning limit, 50000^2 above its error limit.
    data = patch_png_size(valid_png(), side, side)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        msg = error_of(data)
    assert msg == f"image is too large: {side}x{side} pixels (limit 40 MP)"
    assert time.perf_counter() - start < 1.0  # rejected from the header, nothing decoded


def test_decompression_bomb_as_warning_error():
    # Even if warnings are turned into errors (pytest -W error), the outcome is the same ImageError.
    data = patch_png_size(valid_png(), 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert error_of(data) == "image is too large: 10000x10000 pixels (limit 40 MP)"


def test_decompression_bomb_genuine_small_file():
    data = png_1bit_zeros(6400, 6400)  # 40.96 MP
    assert len(data) < 20_000
    Image.open(io.BytesIO(data)).verify()  # it really is a valid PNG
    assert error_of(data) == "image is too large: 6400x6400 pixels (limit 40 MP)"


def test_decompression_bomb_jpeg_header():
    data = bytearray(valid_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # height, width
    assert error_of(bytes(data)) == "image is too large: 60000x60000 pixels (limit 40 MP)"


def test_pixel_limit_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    assert error_of(valid_png()) == "image is too large: 32x32 pixels (limit 0.001 MP)"


def test_file_too_large_bytes(monkeypatch):
    data = valid_png()  # ~3 KB of noise
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    assert error_of(data) == f"file is too large: {len(data) / 1024:.1f} KB (limit 1000 bytes)"
    assert error_of(bytearray(data)).startswith("file is too large: ")
    assert error_of(io.BytesIO(data)).startswith("file is too large: ")


def test_file_too_large_path_checked_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as fh:
        fh.truncate(70 * 1024 * 1024)  # sparse: nothing is written

    def no_open(*args, **kwargs):  # the file must be rejected from os.stat alone
        raise AssertionError("file was opened")

    monkeypatch.setattr("builtins.open", no_open)
    assert error_of(path) == "file is too large: 70.0 MB (limit 64 MB)"
    assert error_of(str(path)) == "file is too large: 70.0 MB (limit 64 MB)"


class FakeUpload:
    """Like Streamlit's UploadedFile: .size, .getvalue(), .read(), .name."""

    def __init__(self, data: bytes, size: int | None = None, name: str = "upload.png"):
        self._data = data
        self.size = len(data) if size is None else size
        self.name = name
        self.reads = 0

    def getvalue(self) -> bytes:
        self.reads += 1
        return self._data

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._data if n < 0 else self._data[:n]


def test_file_too_large_upload_checked_before_reading():
    upload = FakeUpload(valid_png(), size=70 * 1024 * 1024)
    assert error_of(upload) == "file is too large: 70.0 MB (limit 64 MB)"
    assert upload.reads == 0


def test_file_too_large_stream_without_size(monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 2048)

    class Stream(io.RawIOBase):  # not seekable, no size: read at most limit + 1 bytes
        def __init__(self):
            self.given = 0

        def readable(self):
            return True

        def readinto(self, buf):
            n = len(buf)
            buf[:n] = b"\x00" * n
            self.given += n
            return n

    stream = Stream()
    assert error_of(stream) == "file is too large: 2.0 KB (limit 2 KB)"
    assert stream.given <= 2049


def test_too_small():
    assert error_of(encode(solid(RED, (1, 1)), "PNG")) == "image is too small: 1x1 pixels (minimum 16x16)"
    assert error_of(encode(solid(RED, (15, 200)), "PNG")) == "image is too small: 15x200 pixels (minimum 16x16)"


def test_extreme_aspect():
    assert error_of(encode(solid(RED, (800, 10)), "PNG")) == "image is too small: 800x10 pixels (minimum 16x16)"
    assert error_of(encode(solid(RED, (800, 16)), "PNG")) == "extreme aspect ratio 50:1 (maximum 8:1)"
    assert error_of(encode(solid(RED, (16, 140)), "PNG")) == "extreme aspect ratio 8.8:1 (maximum 8:1)"
    assert read_image(encode(solid(RED, (128, 16)), "PNG")).size == (128, 16)  # exactly 8:1 is fine


def test_extreme_aspect_800x10_with_small_minimum(monkeypatch):
    monkeypatch.setattr(images, "MIN_SIDE", 8)
    assert error_of(encode(solid(RED, (800, 10)), "PNG")) == "extreme aspect ratio 80:1 (maximum 8:1)"


# ----------------------------------------------------------------------------------- modes and formats


def test_animated_gif_first_frame():
    frames = [solid(c) for c in (RED, GREEN, BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    im = read_image(data)
    assert_rgb(im)
    assert im.size == (32, 32)
    assert im.getpixel((16, 16)) == RED


def test_animated_webp_and_png_first_frame():
    frames = [solid(c) for c in (BLUE, RED)]
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert read_image(webp).getpixel((5, 5)) == BLUE
    assert read_image(apng).getpixel((5, 5)) == BLUE


def test_mpo_first_frame():
    data = encode(solid(RED), "MPO", save_all=True, append_images=[solid(BLUE)], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert close(read_image(data).getpixel((16, 16)), RED, tol=3)


def test_16bit_grayscale_png_scaled_not_clipped():
    arr = np.array([[0, 257, 32768, 65535] * 4] * 16, dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode == "I;16"
    data = encode(src, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    im = read_image(data)
    assert_rgb(im)
    assert [im.getpixel((x, 0)) for x in range(4)] == [(0,) * 3, (1,) * 3, (128,) * 3, (255,) * 3]


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_grayscale_tiff(mode):
    arr = np.array([[0, 32768, 65535, 1000] * 4] * 16, dtype=np.uint16)
    # (not .convert(mode): Pillow's I;16 -> I;16B conversion clips values to 255)
    src = Image.frombytes(mode, (16, 16), arr.astype("<u2" if mode == "I;16" else ">u2").tobytes())
    data = encode(src, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    im = read_image(data)
    assert [im.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_32bit_int_tiff():
    in_range = np.array([[0, 65535] * 8] * 16, dtype=np.int32)
    assert [read_image(encode(Image.fromarray(in_range), "TIFF")).getpixel((x, 0))[0] for x in (0, 1)] == [0, 255]
    # values outside 0..65535: stretched from min..max
    wide = np.array([[-1000, 0, 1000] * 6] * 16, dtype=np.int32)
    im = read_image(encode(Image.fromarray(wide), "TIFF"))
    assert [im.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_tiff_stretched():
    arr = np.array([[0.0, 0.5, 1.0, 0.25] * 4] * 16, dtype=np.float32)
    src = Image.fromarray(arr)
    assert src.mode == "F"
    im = read_image(encode(src, "TIFF"))
    assert_rgb(im)
    assert [im.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 64]


def test_float_tiff_nan_rejected():
    arr = np.full((16, 16), 0.5, dtype=np.float32)
    arr[3, 3] = np.nan
    assert error_of(encode(Image.fromarray(arr), "TIFF")) == (
        "unsupported float image: contains NaN or infinite values"
    )


def test_cmyk_jpeg():
    white = read_image(encode(solid((0, 0, 0, 0), mode="CMYK"), "JPEG", quality=95))
    cyan = read_image(encode(solid((255, 0, 0, 0), mode="CMYK"), "JPEG", quality=95))
    assert_rgb(white)
    assert close(white.getpixel((16, 16)), WHITE, tol=3)
    assert close(cyan.getpixel((16, 16)), (0, 255, 255), tol=3)


def test_cmyk_and_ycbcr_and_lab_tiff():
    assert close(read_image(encode(solid((0, 255, 0, 0), mode="CMYK"), "TIFF")).getpixel((0, 0)), (255, 0, 255))
    ycc = solid(RED).convert("YCbCr")
    assert close(read_image(encode(ycc, "TIFF")).getpixel((0, 0)), RED, tol=3)
    lab = Image.new("LAB", (32, 32), (128, 128, 128))  # mid grey
    grey = read_image(encode(lab, "TIFF")).getpixel((0, 0))
    assert grey[0] == grey[1] == grey[2] and 100 < grey[0] < 150


def test_palette_png_with_transparency_flattened_on_white():
    im = Image.new("P", (32, 32), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (0, 0, 16, 32))  # left half blue, right half (index 0) transparent red
    for kw in ({"transparency": 0}, {"transparency": bytes([0, 255])}):
        out = read_image(encode(im, "PNG", **kw))
        assert_rgb(out)
        assert out.getpixel((5, 5)) == BLUE
        assert out.getpixel((25, 5)) == WHITE


def test_gif_with_transparency():
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 16, 32))
    out = read_image(encode(im, "GIF", transparency=0))
    assert out.getpixel((5, 5)) == RED
    assert out.getpixel((25, 5)) == WHITE


@pytest.mark.parametrize(
    "mode, color, expected",
    [
        ("LA", (0, 0), WHITE),  # fully transparent black -> white
        ("LA", (0, 255), BLACK),
        ("LA", (0, 128), (127, 127, 127)),
        ("RGBA", (255, 0, 0, 0), WHITE),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
        ("RGBA", (0, 0, 255, 255), BLUE),
    ],
)
def test_alpha_flattened_on_white(mode, color, expected):
    for fmt in ("PNG", "TIFF"):
        out = read_image(encode(solid(color, mode=mode), fmt))
        assert_rgb(out)
        assert close(out.getpixel((3, 3)), expected, tol=1), (fmt, out.getpixel((3, 3)))


def test_rgb_png_with_trns_colour_key():
    im = solid(RED)
    im.paste(BLUE, (0, 0, 16, 32))
    out = read_image(encode(im, "PNG", transparency=RED))
    assert out.getpixel((5, 5)) == BLUE
    assert out.getpixel((25, 5)) == WHITE


def test_grayscale_and_1bit():
    gray = solid(77, mode="L")
    assert read_image(encode(gray, "PNG")).getpixel((3, 3)) == (77, 77, 77)
    bits = Image.new("1", (32, 32), 0)
    bits.paste(1, (0, 0, 16, 32))
    out = read_image(encode(bits, "PNG"))
    assert_rgb(out)
    assert out.getpixel((5, 5)) == WHITE and out.getpixel((25, 5)) == BLACK
    out = read_image(encode(bits, "BMP"))
    assert out.getpixel((5, 5)) == WHITE and out.getpixel((25, 5)) == BLACK


def exif_jpeg(orientation: int) -> bytes:
    """40x20 blue JPEG with a red 10x10 block at the top-left corner, and an EXIF orientation."""
    im = solid(BLUE, (40, 20))
    im.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, subsampling=0, exif=exif)


@pytest.mark.parametrize(
    "orientation, size, red_at, blue_at",
    [
        (1, (40, 20), (4, 4), (35, 15)),
        (3, (40, 20), (35, 15), (4, 4)),  # rotate 180: red at bottom right
        (6, (20, 40), (15, 4), (4, 4)),  # rotate 90 clockwise: red at top right
        (8, (20, 40), (4, 35), (4, 4)),  # rotate 90 counter-clockwise: red at bottom left
    ],
)
def test_exif_orientation(orientation, size, red_at, blue_at):
    im = read_image(exif_jpeg(orientation))
    assert_rgb(im)
    assert im.size == size
    assert close(im.getpixel(red_at), RED, tol=40)
    assert close(im.getpixel(blue_at), BLUE, tol=40)
    assert "exif" not in im.info  # not rotated twice by a later exif_transpose


def test_bad_exif_orientation_ignored():
    im = read_image(exif_jpeg(77))
    assert im.size == (40, 20)


@pytest.mark.parametrize(
    "fmt, kw, tol",
    [
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 8),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 4),
        ("GIF", {}, 0),
    ],
)
def test_formats_roundtrip(fmt, kw, tol):
    src = solid(RED, (48, 32))
    src.paste(BLUE, (24, 0, 48, 32))
    im = read_image(encode(src, fmt, **kw))
    assert_rgb(im)
    assert im.size == (48, 32)
    assert close(im.getpixel((5, 16)), RED, tol) and close(im.getpixel((43, 16)), BLUE, tol)


# ------------------------------------------------------------------------------------------- sources


def test_path_inputs(tmp_path):
    path = tmp_path / "apple.png"
    path.write_bytes(encode(solid(GREEN), "PNG"))
    for source in (path, str(path)):
        im = read_image(source)
        assert_rgb(im)
        assert im.getpixel((0, 0)) == GREEN


def test_path_errors(tmp_path):
    assert error_of(tmp_path / "missing.jpg") == "cannot read file: No such file or directory"
    assert error_of(tmp_path) == "cannot read file: it is a directory"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_of(tmp_path / "empty.jpg") == "image is empty (0 bytes)"


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_path_does_not_hang():
    assert error_of("/dev/zero") == "cannot read file: not a regular file"


def test_file_like_inputs(tmp_path):
    data = encode(solid(BLUE), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        im = read_image(fh)
    # the file is closed: the image must still be usable
    assert im.getpixel((3, 3)) == BLUE
    assert im.copy().resize((8, 8)).getpixel((1, 1)) == BLUE

    buf = io.BytesIO(data)
    buf.read()  # position at the end: getvalue() is still the whole upload
    assert read_image(buf).getpixel((0, 0)) == BLUE

    upload = FakeUpload(data)
    assert read_image(upload).getpixel((0, 0)) == BLUE
    assert read_image(memoryview(data)).getpixel((0, 0)) == BLUE


def test_source_name_attached_not_in_message(tmp_path):
    with pytest.raises(ImageError) as info:
        read_image(b"junk", name="banana.jpg")
    assert info.value.source_name == "banana.jpg" and "banana" not in str(info.value)
    with pytest.raises(ImageError) as info:
        read_image(FakeUpload(b"junk", name="kiwi.png"))
    assert info.value.source_name == "kiwi.png"
    assert isinstance(info.value, ValueError)


def test_wrong_argument_type_is_a_type_error():
    with pytest.raises(TypeError):
        read_image(12345)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        read_image(io.StringIO("text"))


# ---------------------------------------------------------------------------------- arrays and digest


def test_to_array_squash_bilinear():
    assert images.RESIZE_POLICY == "squash-bilinear"
    src = solid(RED, (64, 32))
    src.paste(BLUE, (32, 0, 64, 32))
    arr = images.to_array(src, 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8
    assert tuple(arr[8, 2]) == RED and tuple(arr[8, 13]) == BLUE  # squashed, not cropped
    expected = np.asarray(src.resize((16, 16), Image.Resampling.BILINEAR, reducing_gap=None))
    assert np.array_equal(arr, expected)
    arr[0, 0] = 0  # writable, independent of the image
    assert src.getpixel((0, 0)) == RED and tuple(images.to_array(src, 16)[0, 0]) == RED
    assert images.to_array(solid((1, 2, 3), (20, 20)), 20)[0, 0].tolist() == [1, 2, 3]


def test_to_array_converts_non_rgb_and_checks_size():
    assert images.to_array(solid((0, 0), mode="LA"), 4)[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError):
        images.to_array(solid(RED), 0)


def test_load_for_model():
    im, arr = images.load_for_model(encode(solid(GREEN, (40, 20)), "PNG"), 24)
    assert im.size == (40, 20) and arr.shape == (24, 24, 3)
    assert arr[12, 12].tolist() == list(GREEN)


def test_image_digest():
    data = valid_png()
    assert images.image_digest(data) == hashlib.sha256(data).hexdigest()
    assert images.image_digest(data + b"\0") != images.image_digest(data)


def test_constants():
    assert images.MAX_FILE_BYTES == 64 * 1024 * 1024
    assert images.MAX_PIXELS == 40_000_000
    assert images.MIN_SIDE == 16 and images.MAX_ASPECT == 8.0
    assert images.ALLOWED_FORMATS == {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO", "HEIF"}


# ------------------------------------------------------------------------------------------ no state


def test_failures_leave_no_global_state():
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    bad = [b"", b"junk", valid_png()[:100], patch_png_size(valid_png(), 50000, 50000), encode(solid(RED, (1, 1)), "PNG")]
    for data in bad:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            error_of(data)
        assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before
        assert read_image(valid_png()).size == (32, 32)


# ---------------------------------------------------------------------------------------------- fuzz


def check_outcome(data: bytes) -> None:
    try:
        im = read_image(data)
    except ImageError as err:
        msg = str(err)
        assert msg and "\n" not in msg
    else:
        assert_rgb(im)
        w, h = im.size
        assert min(w, h) >= images.MIN_SIDE and w * h <= images.MAX_PIXELS
        im.getpixel((0, 0))


FUZZ = settings(
    max_examples=200,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes(data):
    check_outcome(data)


@functools.lru_cache(maxsize=None)
def fuzz_seeds() -> tuple[bytes, ...]:
    im = noise((24, 24), seed=3)
    return (
        valid_png(),
        valid_jpeg(),
        encode(im.convert("P"), "GIF"),
        encode(im.convert("RGBA"), "PNG"),
        encode(im, "WEBP", quality=70),
        encode(im, "BMP"),
        encode(im, "TIFF"),
    )


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(fuzz_seeds())))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_fuzz_mutated_valid_files(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own decompression-bomb / EXIF warnings
        check_outcome(data)
    assert read_image(valid_png()).size == (32, 32)  # a failure never breaks the next call


# ------------------------------------------------------------------------------------------ phone photos


def halves_jpeg(width: int, height: int, **kw) -> bytes:
    """A width x height JPEG, red left half and blue right half, at low quality (small file, fast to write)."""
    im = Image.new("RGB", (width, height), BLUE)
    im.paste(RED, (0, 0, width // 2, height))
    return encode(im, "JPEG", quality=10, **kw)


@pytest.mark.parametrize(
    "size, decoded",
    [((8000, 6000), (4000, 3000)), ((12000, 9000), (6000, 4500)), ((16384, 12288), (4096, 3072))],
    ids=["48MP-at-half", "108MP-at-half", "201MP-at-quarter"],
)
def test_phone_jpeg_above_pixel_limit_decodes_reduced(size, decoded):
    data = halves_jpeg(*size)
    assert len(data) <= images.MAX_FILE_BYTES and size[0] * size[1] > images.MAX_PIXELS
    im = read_image(data)
    assert_rgb(im)
    assert im.size == decoded
    assert close(im.getpixel((decoded[0] // 4, decoded[1] // 2)), RED, 8)
    assert close(im.getpixel((decoded[0] * 3 // 4, decoded[1] // 2)), BLUE, 8)


def test_reduced_jpeg_keeps_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im = read_image(halves_jpeg(8000, 6000, exif=exif.tobytes()))
    assert im.size == (3000, 4000)
    assert close(im.getpixel((1500, 1000)), RED, 8) and close(im.getpixel((1500, 3000)), BLUE, 8)


def test_jpeg_over_pixel_limit_even_at_eighth_is_refused():
    data = bytearray(valid_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 18000, 18000)  # 324 MP: 1/8 is 2250^2, 1/4 is 4500^2 (fits)
    assert read_image(bytes(data)).size == (4500, 4500)  # libjpeg pads the missing scan data
    data[sof + 5 : sof + 9] = struct.pack(">HH", 51000, 51000)  # 1/8 is 6375^2 = 40.6 MP
    assert error_of(bytes(data)) == "image is too large: 51000x51000 pixels (limit 40 MP)"


def test_heic_photo():
    im = Image.new("RGB", (640, 480), GREEN)
    im.paste(RED, (0, 0, 320, 480))
    data = encode(im, "HEIF", quality=90)
    assert data[4:12] == b"ftypheic"
    out = read_image(data)
    assert_rgb(out)
    assert out.size == (640, 480)
    assert close(out.getpixel((100, 240)), RED, 12) and close(out.getpixel((540, 240)), GREEN, 12)


def test_heic_truncated():
    data = encode(Image.new("RGB", (640, 480), GREEN), "HEIF")
    assert error_of(data[: len(data) // 2]).startswith("file is truncated or corrupt")
    fake = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40
    assert error_of(fake) == "file is truncated or corrupt: HEIF data that pillow-heif cannot read"


def test_heic_over_pixel_limit_is_refused(monkeypatch):
    # HEIF cannot decode at reduced size, so the header check stays.
    data = encode(Image.new("RGB", (640, 480), GREEN), "HEIF")
    monkeypatch.setattr(images, "MAX_PIXELS", 640 * 480 - 1)
    assert error_of(data) == "image is too large: 640x480 pixels (limit 0.307199 MP)"
