"""A small CRNN in Flax NNX: convolutions over the image, a BiLSTM over width.

``[B, H, W]`` images become ``[B, W / 4, K]`` logits, one frame per four
pixel columns. Built for CPU throughput: the image enters as 2x2 pixel blocks
(space to depth: a 3x3 convolution on one channel is slow on CPU and its
gradient slower), then a 2x2 and a 2x1 max pool leave ``H / 8`` rows that
are flattened into each frame's features. The pools are reshapes and maxima,
whose gradient is much cheaper on CPU than ``reduce_window``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class ConvBlock(nnx.Module):
    """3x3 convolution, batch norm, ReLU, then an optional max pool."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int] | None, *, rngs):
        self.conv = nnx.Conv(cin, cout, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
        self.pool = pool

    def __call__(self, x):
        x = jax.nn.relu(self.norm(self.conv(x)))
        if self.pool is not None:
            (ph, pw), (b, h, w, c) = self.pool, x.shape
            x = jnp.max(x.reshape(b, h // ph, ph, w // pw, pw, c), axis=(2, 4))
        return x


class CRNN(nnx.Module):
    """Convolutional recurrent network for CTC.

    Args:
      num_classes: ``K``, the output classes including the blank.
      height: image height; a multiple of 8.
      channels: the four convolutions' widths.
      hidden: the LSTM's size per direction.
      rngs: Flax random streams for the initialisation.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        height: int = 32,
        channels: Sequence[int] = (16, 32, 64, 64),
        hidden: int = 128,
        rngs: nnx.Rngs,
    ):
        if height % 8:
            raise ValueError(f"`height` must be a multiple of 8, got {height}.")
        c1, c2, c3, c4 = channels
        self.blocks = nnx.List(
            [
                ConvBlock(4, c1, None, rngs=rngs),
                ConvBlock(c1, c2, (2, 2), rngs=rngs),
                ConvBlock(c2, c3, (2, 1), rngs=rngs),
                ConvBlock(c3, c4, None, rngs=rngs),
            ]
        )
        self.project = nnx.Linear(c4 * height // 8, hidden, rngs=rngs)
        self.rnn = nnx.Bidirectional(
            nnx.RNN(nnx.OptimizedLSTMCell(hidden, hidden, rngs=rngs), rngs=rngs),
            nnx.RNN(nnx.OptimizedLSTMCell(hidden, hidden, rngs=rngs), rngs=rngs),
            rngs=rngs,
        )
        self.head = nnx.Linear(2 * hidden, num_classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        """``[B, H, W]`` images in ``[0, 1]`` to ``[B, W / 4, K]`` float32 logits.

        ``W`` must be a multiple of 4.
        """
        b, h, w = images.shape
        x = images.astype(jnp.float32) - 0.5
        x = x.reshape(b, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4)
        x = x.reshape(b, h // 2, w // 2, 4)
        for block in self.blocks:
            x = block(x)
        _, rows, frames, channels = x.shape
        x = jnp.transpose(x, (0, 2, 1, 3)).reshape(b, frames, rows * channels)
        x = jax.nn.relu(self.project(x))
        return self.head(self.rnn(x))
