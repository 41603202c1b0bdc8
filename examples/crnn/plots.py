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


def lm_comparison(metrics: dict, path: Path) -> None:
    """Test WER / CER per decoder, and the validation WER of the tuning grid."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = ["greedy", "beam", "beam_lm"]
    titles = [
        "greedy",
        f"beam W={metrics['beam']['beam_width']}",
        f"beam + {metrics['lm']['order']}-gram LM",
    ]
    x = np.arange(len(names))
    for offset, key, colour in ((-0.2, "wer", "tab:red"), (0.2, "cer", "tab:blue")):
        values = [100 * metrics[n][key] for n in names]
        bars = left.bar(x + offset, values, 0.4, color=colour, label=key.upper())
        left.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set_xticks(x, titles)
    left.set_ylabel("% on the test lines")
    left.set_title(
        f"{metrics['test']['lines']} held-out lines, "
        f"{metrics['train']['steps']} training steps"
    )
    left.legend()
    left.grid(alpha=0.3, axis="y")

    grid = metrics["validation"]["grid"]
    weights = sorted({g["weight"] for g in grid})
    bonuses = sorted({g["word_bonus"] for g in grid})
    wer = np.full((len(weights), len(bonuses)), np.nan)
    for g in grid:
        wer[weights.index(g["weight"]), bonuses.index(g["word_bonus"])] = g["wer"]
    image = right.imshow(100 * wer, cmap="viridis_r", aspect="auto", origin="lower")
    fig.colorbar(image, ax=right, label="validation WER %")
    chosen = metrics["beam_lm"]
    right.plot(
        bonuses.index(chosen["word_bonus"]),
        weights.index(chosen["weight"]),
        "r*",
        markersize=14,
    )
    right.set_xticks(range(len(bonuses)), [f"{b:g}" for b in bonuses])
    right.set_yticks(range(len(weights)), [f"{w:g}" for w in weights])
    right.set_xlabel("word bonus")
    right.set_ylabel("LM weight")
    right.set_title(
        f"tuning on validation (beam alone: "
        f"{100 * metrics['validation']['beam']['wer']:.1f}%)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
