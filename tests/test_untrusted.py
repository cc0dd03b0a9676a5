"""Image files users point aejax at are untrusted: a small file that decodes to hundreds of
megapixels (a decompression bomb) is one error naming it, decided from its header, in
bounded memory, wherever it comes in (a --dataset folder, aejax.score's inputs, a .npy)."""

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from aejax import data, inputs
from aejax.data import images as decoding
from aejax.errors import AejaxError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(path, width: int = 20_000, height: int = 10_000):
    """A real, valid greyscale PNG of ``width x height`` black pixels: 200 megapixels in
    ~200 kB, compressed row by row so that making it never holds the image."""
    compressor, idat, row = zlib.compressobj(9), bytearray(), bytes(width + 1)
    for _ in range(height):
        idat += compressor.compress(row)
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", bytes(idat))
        + _chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def bmp_header_named_jpg(path, width: int, height: int):
    """A BMP file that declares ``width x height`` 8-bit pixels and holds none, named .jpg:
    Pillow goes by the content, and its size is known only to Pillow's own header parser."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    offset = 14 + len(info) + 1024
    path.write_bytes(b"BM" + struct.pack("<IHHI", offset, 0, 0, offset) + info + bytes(1024))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_a_bomb_in_a_dataset_folder_is_one_error_naming_it(bomb, tmp_path):
    root = tmp_path / "pictures"
    root.mkdir()
    for i in range(5):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(root / f"{i}.png")
    (root / "huge.png").write_bytes(bomb.read_bytes())
    with pytest.raises(AejaxError, match=r"huge\.png is an image of 20000x10000 \(200 mega"):
        data.load(str(root), "train", str(tmp_path / "tfds"), image_size=[16, 16])


@pytest.mark.parametrize("size", [(20_000, 10_000), (10_000, 10_000)])
def test_a_bomb_given_to_score_is_refused_whatever_its_format(bomb, tmp_path, size):
    # 200 megapixels: Pillow's own error; 100: only its warning, refused all the same.
    disguised = bmp_header_named_jpg(tmp_path / "photo.jpg", *size)
    for path in (bomb, disguised):
        with pytest.raises(AejaxError, match=f"{path.name} is an image of .*, over the 89.5 m"):
            inputs.read([path], (28, 28, 1))


def test_the_limit_is_pillows_and_an_image_at_it_is_read(tmp_path):
    assert decoding.MAX_PIXELS == Image.MAX_IMAGE_PIXELS  # Pillow's default, made a hard limit
    decoding.check_pixels("ok.png", 9_459, 9_459)  # 89.47 megapixels: under it
    with pytest.raises(AejaxError, match="9460x9460"):
        decoding.check_pixels("big.png", 9_460, 9_460)


def test_an_npy_of_bomb_sized_images_is_refused_before_a_row_is_read(tmp_path):
    path = tmp_path / "huge.npy"
    header = np.lib.format  # a header that declares [2, 10000, 10000], with no data behind it
    with open(path, "wb") as f:
        header.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": (2, 10_000, 10_000)}
        )
        f.truncate(f.tell() + 2 * 10_000 * 10_000)  # sparse: no memory, no disk
    with pytest.raises(AejaxError, match=r"huge\.npy\[0\] is an image of 10000x10000"):
        inputs.read([path], (28, 28, 1))


def test_deciding_takes_bounded_memory(bomb):
    """Refusing the 200-megapixel bomb reads its header only: the process stays far below
    the 200 MB (grey) to 600 MB (RGB) that decoding it would take."""
    # The process's own peak (VmHWM: ru_maxrss would count the parent's, kept across exec).
    child = (
        "from pathlib import Path\n"
        "from aejax import inputs\n"
        "from aejax.errors import AejaxError\n"
        "try:\n"
        f"    inputs.read([{str(bomb)!r}], (28, 28, 3))\n"
        "except AejaxError:\n"
        "    status = Path('/proc/self/status').read_text().splitlines()\n"
        "    print([line.split()[1] for line in status if line.startswith('VmHWM')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    assert int(out.stdout) < 150_000  # kB: the interpreter, NumPy and Pillow


def png_file(path, pixels_HxWxC: np.ndarray, chunks: tuple = (), depth: int = 8, tail=b""):
    """A PNG of ``pixels_HxWxC`` (grey for C = 1, RGB for 3; filter 0 rows), made here byte
    by byte, with ``chunks`` (kind, body) before its data and ``tail`` after its end."""
    height, width, channels = pixels_HxWxC.shape
    rows = pixels_HxWxC.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, depth, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
        + b"".join(_chunk(kind, body) for kind, body in chunks)
        + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"") + tail
    )  # fmt: skip
    return path


def decoded_by_pillow_only(item, shape, monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "pyspng", None)  # plain_png finds no libspng: Pillow decodes
        assert decoding.plain_png(item.path, shape) is None
        return inputs._decode(item, shape, {})


PIXELS = np.random.default_rng(0).integers(0, 256, (28, 28, 3), np.uint8)


@pytest.mark.parametrize(
    "name, channels, chunks",
    [
        ("grey", 1, ()),
        ("rgb", 3, ()),
        ("grey, transparent 7", 1, ((b"tRNS", b"\0\x07"),)),
        ("rgb, transparent", 3, ((b"tRNS", b"\0\x07\0\x08\0\x09"),)),
        ("gamma 1.0 and sRGB", 3, ((b"gAMA", struct.pack(">I", 100_000)), (b"sRGB", b"\0"))),
        ("a large text", 1, ((b"tEXt", b"note\0" + b"x" * 100_000),)),
    ],
)
def test_pngs_in_the_models_shape_decode_to_pillows_pixels(
    name, channels, chunks, tmp_path, monkeypatch
):
    # A PNG in shape goes through libspng (plain_png); its samples must be Pillow's, whatever
    # the ancillary chunks say (transparency, gamma: neither decoder applies them).
    path = png_file(tmp_path / "x.png", PIXELS[..., :channels], chunks)
    shape = (28, 28, channels)
    item = inputs.Item(str(path), str(path))
    plain = decoding.plain_png(str(path), shape)
    by_pillow, had, same_mode = decoded_by_pillow_only(item, shape, monkeypatch)
    if name == "a large text":  # the file is over plain_png's size bound: Pillow reads it
        assert plain is None
    else:
        np.testing.assert_array_equal(plain, PIXELS[..., :channels])
    np.testing.assert_array_equal(inputs._decode(item, shape, {})[0], by_pillow)
    assert (had, same_mode) == (shape, True)


@pytest.mark.parametrize(
    "name", ["palette", "rgba", "grey+alpha", "16-bit", "1-bit", "other size", "grey for rgb",
             "jpeg", "data after the end", "truncated", "broken data"],
)  # fmt: skip
def test_other_pngs_and_damaged_files_go_to_pillow(name, tmp_path, monkeypatch):
    # Anything but a plain PNG in shape is Pillow's to decode (or to refuse, naming it), so
    # aejax.score gives it the pixels, conversions and errors it always did.
    path, shape = tmp_path / "x.png", (28, 28, 3)
    grey = Image.fromarray(PIXELS[..., 0])
    if name in ("palette", "rgba", "grey+alpha", "1-bit", "jpeg"):
        image = {"palette": grey.convert("P"), "rgba": grey.convert("RGBA"),
                 "grey+alpha": grey.convert("LA"), "1-bit": grey.convert("1"),
                 "jpeg": grey.convert("RGB")}[name]  # fmt: skip
        image.save(path, format="JPEG" if name == "jpeg" else "PNG")
    elif name == "16-bit":
        png_file(path, PIXELS.astype(np.uint16) * 257, depth=16)
    elif name == "other size":
        png_file(path, PIXELS[:27])
    elif name == "grey for rgb":
        png_file(path, PIXELS[..., :1])
    elif name == "data after the end":
        png_file(path, PIXELS, tail=bytes(200_000))
    else:
        data = png_file(path, PIXELS).read_bytes()
        idat = data.index(b"IDAT") + 4
        data = data[: idat + 100] if name == "truncated" else (
            data[:idat] + bytes(50) + data[idat + 50 :])  # fmt: skip
        path.write_bytes(data)
    assert decoding.plain_png(str(path), shape) is None
    item = inputs.Item(str(path), str(path))
    try:
        expected = decoded_by_pillow_only(item, shape, monkeypatch)
    except AejaxError as e:
        with pytest.raises(AejaxError, match="cannot read") as got:
            inputs._decode(item, shape, {})
        assert str(got.value) == str(e)
        return
    got = inputs._decode(item, shape, {})
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1:] == expected[1:]


def _npy_with_header(path, header: str, body: bytes = b"") -> None:
    """A .npy file (version 1.0) with this header dict, padded as numpy pads it."""
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + body)


def test_npy_files_that_describe_no_images_are_one_line(tmp_path):
    negative = tmp_path / "negative.npy"
    _npy_with_header(negative, "{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 8, 8), }")
    archive = tmp_path / "archive.npy"
    with open(archive, "wb") as f:
        np.savez(f, images=np.zeros((4, 8, 8), np.uint8))
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.zeros((50, 8, 8), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:300])
    for path, says in ((negative, "cannot read"), (archive, "is an .npz archive"),
                       (truncated, "cannot read")):  # fmt: skip
        with pytest.raises(AejaxError, match=says) as caught:
            data.source(str(path)).image_shape()
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        # Given to aejax.score the same way: no traceback.
        with pytest.raises(AejaxError, match=says):
            inputs.chunks(inputs.items([str(path)]), (8, 8, 1), 16).__next__()


def test_a_decoded_copy_that_was_replaced_is_decoded_anew(tmp_path):
    from aejax.data import cache

    np.save(tmp_path / "images.npy", np.arange(20 * 4 * 4, dtype=np.uint8).reshape(20, 4, 4))
    source = data.source(str(tmp_path / "images.npy"))
    first = np.array(source.load("train")[0])
    for copy in cache.cache_root().rglob("*.images.npy"):
        if copy.stat().st_mtime >= (tmp_path / "images.npy").stat().st_mtime:
            copy.write_bytes(b"not an array at all")  # damaged or replaced by someone
    again = data.source(str(tmp_path / "images.npy")).load("train")[0]
    np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("name", ["pipe.png", "pipe.npy"])
def test_a_fifo_given_by_name_is_refused_not_waited_on(name, tmp_path):
    import os

    fifo = tmp_path / name
    os.mkfifo(fifo)
    (tmp_path / f"link-{name}").symlink_to(fifo)
    for given in (fifo, tmp_path / f"link-{name}"):
        with pytest.raises(AejaxError, match="is not a regular file"):
            inputs.items([str(given)])
