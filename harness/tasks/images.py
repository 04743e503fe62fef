"""Image files as the harness sees them: 8-bit RGB arrays, decoded at their real depth.

Every task reads its images here (classification folders, super-resolution HR images), so
the rules hold everywhere (README, "Limits"):

- only regular files are opened (a FIFO or a device named ``x.jpg`` is refused, never read);
- at most ``MAX_PIXELS`` pixels per image, checked from the header before decoding (larger
  ones, and PIL's decompression bombs, are a one-line error);
- 16-bit images (PNG/TIFF greyscale ``I;16``, ``I`` holding values up to 65535) are scaled to
  8 bits explicitly, ``round(v * 255 / 65535)``, and the run's data fingerprint says so;
  16-bit-per-channel colour PNGs are decoded by Pillow from their high byte (``v // 256``),
  also noted; palette,
  LA, RGBA, CMYK, bilevel and YCbCr images are converted to RGB (alpha dropped);
- floating-point images (mode ``F``) have no fixed range and are refused.

Decoded folders are cached (:func:`decode_many`; ``$SLBENCH_CACHE``, default
~/.cache/slbench, ``off`` to turn it off), keyed by every file's path, size and modification
time and by the decoder's version.
"""
from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from harness.errors import UserError, require
from harness.files import atomic_save_npy, atomic_write_json, read_json

IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
MAX_PIXELS = 2**26  # 8192 x 8192; PIL's own bomb limit is higher (warns at 89 M, fails at 179 M)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
NOTE_16 = "16-bit images scaled to 8 bits: round(v * 255 / 65535)"
NOTE_48 = "16-bit-per-channel colour images decoded from their high byte by Pillow: v // 256"


def check_regular(path: Path) -> None:
    """A UserError naming ``path`` unless it is a regular file (links followed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UserError("data.root", f"cannot read {str(path)!r} ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise UserError("data.root", f"{str(path)!r} is {kind}, not an image file; move it "
                        "out of the data folder")


def _open(path: Path) -> Image.Image:
    check_regular(path)
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise UserError("data.root", f"{str(path)!r} is too large to decode ({e}); images may "
                        f"have at most {MAX_PIXELS:,} pixels") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise UserError("data.root", f"{str(path)!r} has {w}x{h} = {w * h:,} pixels, over the "
                        f"limit of {MAX_PIXELS:,} per image; downscale it")
    return im


def _to_rgb8(im: Image.Image, path: Path) -> tuple[np.ndarray, str]:
    """uint8 [H, W, 3] of an open image, and a note on how its depth was mapped ("")."""
    mode = im.mode
    if mode == "F":
        raise UserError("data.root", f"{str(path)!r} is a floating-point image (mode F), whose "
                        "range is not fixed; save it as an 8- or 16-bit image")
    if mode in SIXTEEN_BIT or mode == "I":
        v = np.asarray(im).astype(np.int64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise UserError("data.root", f"{str(path)!r} holds 32-bit integers outside "
                            "[0, 65535]; save it as an 8- or 16-bit image")
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), NOTE_16
    rawmode = im.tile[0][3] if getattr(im, "tile", None) and len(im.tile[0]) > 3 else ""
    note = NOTE_48 if isinstance(rawmode, str) and rawmode.endswith(";16B") else ""
    return np.asarray(im.convert("RGB"), dtype=np.uint8), note


def read_rgb(path: Path) -> tuple[np.ndarray, str]:
    """An image file as uint8 [H, W, 3] and the note on its depth ("" for 8-bit images)."""
    with _open(Path(path)) as im:
        return _to_rgb8(im, Path(path))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, with the same checks as decoding."""
    with _open(Path(path)) as im:
        return im.size


def pil_rgb(path: str) -> Image.Image:
    """A torchvision loader: the image as an RGB PIL image, decoded by :func:`read_rgb`."""
    return Image.fromarray(read_rgb(Path(path))[0])


def notes_of(notes: list[str]) -> tuple[str, ...]:
    """The distinct depth notes of many images, with how many images each concerns."""
    return tuple(f"{n} ({notes.count(n)} of {len(notes)} images)"
                 for n in sorted(set(notes)) if n)


# --------------------------------------------------------------------------- many, cached

def _cache_dir() -> Path | None:
    """Where decoded image folders are cached: $SLBENCH_CACHE, default ~/.cache/slbench;
    SLBENCH_CACHE=off turns the cache off."""
    env = os.environ.get("SLBENCH_CACHE", "")
    if env.lower() == "off":
        return None
    return Path(env) if env else Path.home() / ".cache" / "slbench"


DECODER = "depth-aware-1"  # part of the cache key: entries of an older decoder are not reused


def cache_key(files: list[Path]) -> str:
    """The cache key of a list of images: every file's path (as bytes: any name, in any
    locale), size and modification time, so an image that changes (or is replaced by
    garbage) is decoded again, never served stale; and the decoder's version."""
    h = hashlib.sha256(DECODER.encode())
    for f in files:
        st = f.stat()
        h.update(os.fsencode(f.resolve()) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cached(path: Path | None, n: int) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """A cache entry with its notes, or None when there is none or it is unreadable or of
    the wrong size."""
    if path is None or not path.is_file():
        return None
    try:
        x = np.load(path)  # .npy without pickles: allow_pickle stays False
        notes = read_json(path.with_suffix(".json"))["notes"]
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    ok = x.ndim == 4 and x.shape[0] == n and x.dtype == np.uint8 and isinstance(notes, list)
    return (x, tuple(str(n) for n in notes)) if ok else None


def decode_many(files: list[Path]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode same-sized images to one uint8 [N, 3, H, W] array, with the notes on their
    depth (:func:`notes_of`); cached on disk, the notes beside the pixels."""
    cache = _cache_dir()
    path = cache / f"images-{cache_key(files)}.npy" if cache else None
    hit = _cached(path, len(files))
    if hit is not None:
        return hit
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(read_rgb, files))
    notes = notes_of([n for _, n in decoded])
    shapes = {im.shape for im, _ in decoded}
    require(len(shapes) == 1, "data.root", f"images have different sizes {sorted(shapes)[:3]}; "
            "in-memory imagefolder needs one size")
    x = np.stack([im for im, _ in decoded]).transpose(0, 3, 1, 2).copy()
    if path is not None:
        try:
            atomic_save_npy(path, x)
            atomic_write_json(path.with_suffix(".json"), {"notes": list(notes)})
        except OSError:
            pass  # a cache we cannot write is only slower
    return x, notes
