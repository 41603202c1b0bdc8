"""Reads text-line images with a trained CRNN checkpoint.

    python examples/crnn/predict.py --workdir workdir/crnn IMAGE.png [IMAGE ...]

For each image it prints the text, its confidence and, per character, the
frames (and pixel columns of the resized image) where the greedy path emits
it. Images are converted to grey, scaled to the model's height keeping their
aspect ratio, and batched with padding: the padded frames are marked in
``logit_paddings``, so every image is decoded at its own length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import data  # noqa: E402
import train  # noqa: E402

import jaxctc  # noqa: E402

STRIDE = 4  # pixel columns per frame


class Reading(NamedTuple):
    """One image's result.

    Attributes:
      text: the greedy transcription.
      confidence: ``P(text | image)``, the probability the model gives the
        text summed over all its alignments (``exp(-ctc_loss)``), in [0, 1].
      spans: per character ``(char, first_frame, end_frame)``: the frames
        ``[first, end)`` of its run on the greedy (best) path, from jaxctc's
        token timestamps; frame ``f`` covers pixel columns ``[4 f, 4 f + 4)``
        of the resized image.
    """

    text: str
    confidence: float
    spans: list[tuple[str, int, int]]


def load_images(paths, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[B, H, W]`` in [0, 1] (right-padded with white) and frame paddings."""
    lines = []
    for path in paths:
        image = Image.open(path).convert("L")
        frames = max(1, round(image.width * height / image.height / STRIDE))
        image = image.resize((frames * STRIDE, height), Image.BILINEAR)
        lines.append(np.asarray(image, np.float32) / 255.0)
    width = max(line.shape[1] for line in lines)
    images = np.ones((len(lines), height, width), np.float32)
    paddings = np.ones((len(lines), width // STRIDE), np.float32)
    for i, line in enumerate(lines):
        images[i, :, : line.shape[1]] = line
        paddings[i, : line.shape[1] // STRIDE] = 0.0
    return images, paddings


@nnx.jit
def _decode(model, images, logit_paddings):
    logits = model(images)
    hyp = jaxctc.greedy_decode(logits, logit_paddings, blank_id=data.BLANK_ID)
    # log P(text | image) over all alignments of the text (exact rescoring).
    log_prob = jaxctc.sequence_log_probs(
        logits, logit_paddings, hyp.labels, hyp.label_paddings, blank_id=data.BLANK_ID
    )
    # The greedy path's token timestamps: first and last (inclusive) frame.
    return hyp.labels, hyp.label_paddings, log_prob, hyp.starts, hyp.ends + 1


def read(
    model, images: np.ndarray, logit_paddings: np.ndarray, alphabet=data.ALPHABET
) -> list[Reading]:
    """Decodes a batch with the model (in eval mode); class i + 1 is ``alphabet[i]``."""
    model.eval()
    labels, label_paddings, log_prob, starts, ends = jax.device_get(
        _decode(model, jnp.asarray(images), jnp.asarray(logit_paddings))
    )
    readings = []
    for b, text in enumerate(data.decode(labels, label_paddings, alphabet)):
        n = len(text)
        spans = list(
            zip(text, starts[b, :n].tolist(), ends[b, :n].tolist(), strict=True)
        )
        readings.append(Reading(text, float(np.exp(log_prob[b])), spans))
    return readings


def load_model(workdir: Path):
    """The model of ``workdir``'s config at its latest checkpoint."""
    values = json.loads((workdir / "config.json").read_text())
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    config = train.Config(**values)
    model = train.make_model(config)
    manager = train.checkpointer(workdir)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
    train.restore_checkpoint(manager, step, model)
    return model, config


def main(argv=None) -> list[Reading]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files of one text line")
    parser.add_argument("--workdir", default=train.Config.workdir)
    args = parser.parse_args(argv)
    model, config = load_model(Path(args.workdir))
    images, paddings = load_images(args.images, config.height)
    readings = read(model, images, paddings, train.alphabet(config))
    for path, reading in zip(args.images, readings, strict=True):
        spans = " ".join(
            f"{c}:{s}-{e}(px {STRIDE * s}-{STRIDE * e})" for c, s, e in reading.spans
        )
        print(f"{path}\t{reading.text}\tP={reading.confidence:.4f}\t{spans}")
    return readings


if __name__ == "__main__":
    main()
