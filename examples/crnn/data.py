"""Text-line images, rendered on the fly from fonts that packages ship.

Each line is a random string of 1 to ``max_len`` characters over the
alphabet (or a line of real text drawn by a ``texts`` source, see
``corpus.py``), drawn in a random font, size and position, then rotated
slightly, blurred, contrast-shifted and noised. Nothing is downloaded: the fonts are
Pillow's bundled default font (Aileron, via ``ImageFont.load_default``) and,
when matplotlib is installed, its DejaVu fonts.

Speed: every glyph of every font and size is rendered once into a cache; a
line is then a few array copies, and the augmentations run on whole batches
in NumPy. A batch depends only on ``(seed, index)``, so a resumed run sees the
same data as an uninterrupted one, and the held-out set is a fixed seed.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DIGITS = "0123456789"
UPPERCASE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALPHABET = DIGITS + UPPERCASE
# Real text needs a word delimiter; appended last, so the other characters keep
# their classes (and the random lines their glyphs) in both alphabets.
TEXT_ALPHABET = ALPHABET + " "
BLANK_ID = 0  # class 0 is the CTC blank; character i of the alphabet is class i + 1

FONTS = ("aileron", "dejavu-sans", "dejavu-serif")
TEST_SEED = 1_000_003  # the held-out set's seed: never used for training batches


class Batch(NamedTuple):
    """A batch of text lines.

    Attributes:
      images: ``[B, H, W]`` float32 in ``[0, 1]``, dark text on a light ground.
      labels: ``[B, N]`` int32 classes (``alphabet[c - 1]``), right-padded.
      label_paddings: ``[B, N]`` float32, 1.0 past each line's text.
    """

    images: np.ndarray
    labels: np.ndarray
    label_paddings: np.ndarray


def encode(
    texts: list[str], max_len: int, alphabet: str = ALPHABET
) -> tuple[np.ndarray, np.ndarray]:
    """Strings to right-padded ``(labels [B, N], label_paddings [B, N])``."""
    labels = np.zeros((len(texts), max_len), np.int32)
    paddings = np.ones((len(texts), max_len), np.float32)
    for b, text in enumerate(texts):
        labels[b, : len(text)] = [alphabet.index(c) + 1 for c in text]
        paddings[b, : len(text)] = 0.0
    return labels, paddings


def decode(labels, label_paddings, alphabet: str = ALPHABET) -> list[str]:
    """Right-padded class ids back to strings (blank and padding dropped)."""
    return [
        "".join(alphabet[int(c) - 1] for c, p in zip(row, pad, strict=True) if p == 0)
        for row, pad in zip(np.asarray(labels), np.asarray(label_paddings), strict=True)
    ]


def _load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    if name == "aileron":
        return ImageFont.load_default(size=size)
    import matplotlib

    file = {
        "dejavu-sans": "DejaVuSans.ttf",
        "dejavu-serif": "DejaVuSerif.ttf",
        "dejavu-mono": "DejaVuSansMono.ttf",
    }[name]
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", file)
    return ImageFont.truetype(path, size=size)


class _Glyphs(NamedTuple):
    """One font at one size: glyph ink, advances and the line's ink rows."""

    ink: list[np.ndarray]  # per character of TEXT_ALPHABET: [line_height, w] uint8
    left: np.ndarray  # [C] int, where the glyph's bitmap starts from the pen
    advance: np.ndarray  # [C] float, pen advance in pixels
    height: int  # the line's height (rows with ink over the alphabet)


@functools.cache
def _glyphs(font_name: str, size: int) -> _Glyphs:
    font = _load_font(font_name, size)
    ascent, descent = font.getmetrics()
    pad = size // 2
    cells = []
    for char in TEXT_ALPHABET:
        advance = font.getlength(char)
        cell = Image.new("L", (int(np.ceil(advance)) + 2 * pad, ascent + descent))
        ImageDraw.Draw(cell).text((pad, 0), char, font=font, fill=255)
        cells.append(np.asarray(cell))
    rows = np.flatnonzero(np.any([c.any(axis=1) for c in cells], axis=0))
    top, bottom = rows[0], rows[-1] + 1
    ink, left = [], []
    for cell in cells:
        cols = np.flatnonzero(cell.any(axis=0))
        if not cols.size:  # the space: no ink, only its advance
            ink.append(np.zeros((bottom - top, 0), np.uint8))
            left.append(0)
            continue
        ink.append(np.ascontiguousarray(cell[top:bottom, cols[0] : cols[-1] + 1]))
        left.append(cols[0] - pad)
    advance = np.array([font.getlength(c) for c in TEXT_ALPHABET])
    return _Glyphs(ink, np.array(left), advance, int(bottom - top))


class Renderer:
    """Draws text lines of height ``height`` and width ``width``.

    Args:
      height, width: image size in pixels.
      max_len: the longest line, in characters (lines have 1 to ``max_len``).
      fonts: font names from ``FONTS`` (and ``"dejavu-mono"``).
      min_size: the smallest font size; the largest is the one whose line
        still fits the image (drawn sizes lie in the top two thirds of those
        that fit, so short lines are large and long lines small).
      alphabet: the classes' characters (class ``i + 1`` is ``alphabet[i]``):
        ``ALPHABET``, or ``TEXT_ALPHABET`` for lines with spaces.
      texts: where :meth:`batch` takes its lines from: ``texts(rng, count)``
        returns ``count`` strings over ``alphabet`` of 1 to ``max_len``
        characters, not starting or ending with a space (e.g.
        ``corpus.RandomLines``); by default random strings of 1 to
        ``max_len`` characters over ``ALPHABET``.
    """

    def __init__(
        self,
        height=32,
        width=128,
        max_len=12,
        fonts=FONTS,
        min_size=12,
        alphabet=ALPHABET,
        texts=None,
    ):
        if not TEXT_ALPHABET.startswith(alphabet):
            raise ValueError(
                f"`alphabet` must be ALPHABET or TEXT_ALPHABET, got {alphabet!r}."
            )
        self.height, self.width, self.max_len = height, width, max_len
        self.fonts = tuple(fonts)
        self.alphabet, self.texts = alphabet, texts
        # Per font: the sizes whose line leaves room to rotate and move, and
        # their metrics stacked [S, C] to find the sizes that fit a line at once.
        self.tables = {}
        for name in self.fonts:
            sizes = []
            for size in range(min_size, 4 * height):
                if _glyphs(name, size).height > height - 8:
                    break
                sizes.append(size)
            table = [_glyphs(name, s) for s in sizes]
            self.tables[name] = (
                np.array(sizes),
                table,
                np.stack([g.advance for g in table]),
                np.stack([g.left for g in table]),
                np.array([[i.shape[1] for i in g.ink] for g in table]),
            )

    def _draw(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Ink ``[H, W]`` float32 in ``[0, 1]`` of one line of class indices - 1."""
        name = self.fonts[rng.integers(len(self.fonts))]
        sizes, table, advance, left, ink_width = self.tables[name]
        spacing = rng.uniform(-0.05, 0.25) * sizes  # extra space between letters
        # Line widths at every size; a random size among the largest that fit.
        widths = (
            advance[:, codes[:-1]].sum(axis=1)
            + spacing * (len(codes) - 1)
            - left[:, codes[0]]
            + left[:, codes[-1]]
            + ink_width[:, codes[-1]]
        )
        fits = max(1, int(np.sum(widths <= self.width - 4)))
        k = rng.integers(fits // 3, fits)
        glyphs, line_width, space = table[k], widths[k], spacing[k]
        # A line too long even at the smallest size is drawn on a wider canvas
        # and squeezed to the width, so no character is ever cut off.
        canvas = max(self.width, int(np.ceil(line_width)) + 4)
        ink = np.zeros((self.height, canvas), np.float32)
        x0 = rng.uniform(2, max(2.0, canvas - 2 - line_width))
        y0 = rng.integers(2, self.height - glyphs.height - 1)
        pen = x0 - glyphs.left[codes[0]]
        for code in codes:
            glyph = glyphs.ink[code]
            x = int(round(pen + glyphs.left[code]))
            x_from, x_to = max(x, 0), min(x + glyph.shape[1], canvas)
            if x_to > x_from:
                window = ink[y0 : y0 + glyphs.height, x_from:x_to]
                np.maximum(window, glyph[:, x_from - x : x_to - x] / 255.0, out=window)
            pen += glyphs.advance[code] + space
        if canvas > self.width:
            squeezed = Image.fromarray(ink, mode="F").resize(
                (self.width, self.height), Image.BILINEAR
            )
            ink = np.asarray(squeezed, np.float32)
        return ink

    def batch(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """A random batch; the same ``rng`` state gives the same batch."""
        if self.texts is not None:
            return self.render(self.texts(rng, batch_size), rng)
        lengths = rng.integers(1, self.max_len + 1, size=batch_size)
        codes = [rng.integers(0, len(ALPHABET), size=n) for n in lengths]
        ink = np.stack([self._draw(c, rng) for c in codes])
        images = _augment(ink, rng)
        texts = ["".join(ALPHABET[i] for i in c) for c in codes]
        return Batch(images, *encode(texts, self.max_len))

    def render(self, texts: list[str], rng: np.random.Generator) -> Batch:
        """The lines ``texts`` (over the alphabet), each in a random style."""
        # Glyphs are cached in TEXT_ALPHABET's order, which extends ALPHABET's.
        codes = [np.array([TEXT_ALPHABET.index(c) for c in t]) for t in texts]
        ink = np.stack([self._draw(c, rng) for c in codes])
        return Batch(_augment(ink, rng), *encode(texts, self.max_len, self.alphabet))


def _augment(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation, blur, contrast and noise over a batch ``[B, H, W]``."""
    batch, height, width = ink.shape
    # Rotate by up to 2 degrees about the centre. At such small angles the
    # rotation is a vertical shear: column x moves by sin(angle) (x - centre)
    # rows (linear interpolation between rows, zero fill); the horizontal part,
    # under half a pixel, is left out.
    angle = np.deg2rad(rng.uniform(-2.0, 2.0, size=(batch, 1, 1)))
    x = np.arange(width, dtype=np.float32) - (width - 1) / 2
    shift = (np.sin(angle) * x).astype(np.float32)  # [B, 1, W]
    ink = _shift_columns(ink, shift)
    # Blur: a random mix of the line and its 3x3 binomial smoothing.
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    smooth = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4
    smooth = (smooth[:, :, :-2] + 2 * smooth[:, :, 1:-1] + smooth[:, :, 2:]) / 4
    mix = rng.uniform(0.0, 0.7, size=(batch, 1, 1)).astype(np.float32)
    ink = mix * smooth + (1 - mix) * ink
    # Dark ink on a light ground, with random levels and Gaussian noise.
    ground = rng.uniform(0.7, 1.0, size=(batch, 1, 1)).astype(np.float32)
    colour = rng.uniform(0.0, 0.3, size=(batch, 1, 1)).astype(np.float32)
    noise = rng.uniform(0.0, 0.08, size=(batch, 1, 1)).astype(np.float32)
    images = ground + (colour - ground) * ink
    images += noise * rng.standard_normal(ink.shape, dtype=np.float32)
    return np.clip(images, 0.0, 1.0)


def _shift_columns(images: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``out[b, y, x] = images[b, y + shift[b, 0, x], x]``, linear, zero outside."""
    batch, height, width = images.shape
    padded = np.pad(images, ((0, 0), (1, 2), (0, 0))).reshape(-1)
    whole = np.floor(shift)
    frac = shift - whole
    y = np.arange(height, dtype=np.int32)[None, :, None] + 1
    rows = np.clip(y + whole.astype(np.int32), 0, height + 1)
    flat = (
        np.arange(batch, dtype=np.int32)[:, None, None] * (height + 3) + rows
    ) * width
    flat = flat + np.arange(width, dtype=np.int32)
    above, below = padded[flat], padded[flat + width]
    return (1 - frac) * above + frac * below


def test_set(renderer: Renderer, size: int, seed: int = TEST_SEED) -> Batch:
    """The fixed held-out set: ``size`` lines from their own seed."""
    return renderer.batch(np.random.default_rng(seed), size)


def train_batches(
    renderer: Renderer, batch_size: int, seed: int, start: int, prefetch: int = 4
) -> Iterator[Batch]:
    """Training batches ``start, start + 1, ...``, drawn in a background thread.

    Batch ``i`` comes from ``np.random.default_rng([seed, i])``, so it is the
    same whether or not the run was interrupted before it.
    """
    ready: queue.Queue[Batch] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work():
        step = start
        while not stop.is_set():
            batch = renderer.batch(np.random.default_rng([seed, step]), batch_size)
            while not stop.is_set():
                try:
                    ready.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            yield ready.get()
    finally:
        stop.set()
        thread.join()
