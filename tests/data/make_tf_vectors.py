"""Writes ``tf_beam_search.npz``: ``tf.nn.ctc_beam_search_decoder`` on random batches.

Run once with tensorflow-cpu installed (``pip install tensorflow-cpu``)::

    python tests/data/make_tf_vectors.py

TF puts the blank last and takes time-major inputs and lengths; the stored
arrays are batch-major with paddings, as jaxctc takes them. Each case stores
``logits [B, T, K]`` (float32), ``logit_paddings [B, T]``, the beam width and
TF's top paths: ``labels [B, P, T]`` (padded with -1) and ``log_probs [B, P]``.
"""

import pathlib

import numpy as np
import tensorflow as tf

CASES = [  # (batch, frames, classes, beam_width, top_paths, peakiness)
    (6, 12, 4, 4, 3, 1.0),
    (6, 20, 6, 8, 4, 3.0),
    (4, 30, 8, 16, 2, 5.0),
]


def main():
    rng = np.random.default_rng(1234)
    arrays = {}
    for i, (batch, frames, classes, width, paths, peak) in enumerate(CASES):
        logits = (peak * rng.standard_normal((batch, frames, classes))).astype(
            np.float32
        )
        lengths = rng.integers(1, frames + 1, size=batch).astype(np.int32)
        lengths[0] = frames
        paddings = (np.arange(frames)[None, :] >= lengths[:, None]).astype(np.float32)
        decoded, log_probs = tf.nn.ctc_beam_search_decoder(
            np.transpose(logits, (1, 0, 2)), lengths, beam_width=width, top_paths=paths
        )
        labels = np.full((batch, paths, frames), -1, np.int32)
        for p, sparse in enumerate(decoded):
            dense = tf.sparse.to_dense(sparse, default_value=-1).numpy()
            labels[:, p, : dense.shape[1]] = dense
        arrays[f"logits_{i}"] = logits
        arrays[f"logit_paddings_{i}"] = paddings
        arrays[f"beam_width_{i}"] = np.int32(width)
        arrays[f"labels_{i}"] = labels
        arrays[f"log_probs_{i}"] = log_probs.numpy().astype(np.float32)
    out = pathlib.Path(__file__).with_name("tf_beam_search.npz")
    np.savez_compressed(out, num_cases=np.int32(len(CASES)), **arrays)
    print(f"wrote {out} with TF {tf.__version__}")


if __name__ == "__main__":
    main()
