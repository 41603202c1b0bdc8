"""The example's figures: the training curve and a grid of test predictions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curve(history: dict, path: Path) -> None:
    """Loss per step and test CER / sequence accuracy per evaluation."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    if history["loss"]:
        steps, loss = np.array(history["loss"]).T
        left.plot(steps, loss, color="tab:blue")
        left.set_yscale("log")
    left.set_xlabel("step")
    left.set_ylabel("CTC loss (nats per line)")
    left.set_title("training loss")
    left.grid(alpha=0.3)
    if history["eval"]:
        steps, cer, seq_acc = np.array(history["eval"]).T
        right.plot(steps, 100 * cer, "o-", color="tab:red", label="CER (greedy)")
        right.plot(
            steps, 100 * (1 - seq_acc), "s--", color="tab:gray", label="line error"
        )
        right.set_yscale("log")
        right.axhline(2.0, color="black", lw=0.8, ls=":", label="2% goal")
        right.legend()
    right.set_xlabel("step")
    right.set_ylabel("% on the held-out set")
    right.set_title("test error")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def prediction_grid(
    images: np.ndarray,
    truths: list[str],
    texts: list[str],
    confidences: np.ndarray,
    path: Path,
    columns: int = 3,
) -> None:
    """Test images titled with the prediction and its confidence.

    Green titles are exact matches; red ones also show the truth.
    """
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 1.25 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, truth, text, conf in zip(
        np.ravel(axes), images, truths, texts, confidences, strict=False
    ):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ok = text == truth
        title = f"{text or '(empty)'}  {100 * conf:.1f}%"
        title += "" if ok else f"\n(truth {truth})"
        ax.set_title(title, fontsize=9, color="darkgreen" if ok else "crimson")
    fig.suptitle(
        "prediction  P(text | image) in %  (exact CTC score of the decoded text)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
