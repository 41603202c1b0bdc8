"""Reads real text lines with and without a word language model in the beam.

    python examples/crnn/lm_eval.py --workdir workdir/crnn-text

Trains the CRNN on lines of English text (``train.py --text real``, see
``corpus.py``), or reuses the workdir's checkpoint when it has reached
``--steps`` (a shorter run resumes). Then it builds a word n-gram ARPA from
the training sentences, tunes the LM's ``weight`` and ``word_bonus`` on the
validation lines, and decodes the held-out test lines three ways: greedy,
``jaxctc.prefix_beam_search`` (width 16), and the same search with the LM
fused (``scorers=(jaxctc.NGramLM.from_arpa(...),)``). It writes
``lm_metrics.json`` (WER and CER of each, the tuning grid, the LM's size)
and ``lm.png`` into the workdir.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402
import data  # noqa: E402
import plots  # noqa: E402
import predict  # noqa: E402
import train  # noqa: E402
from train import help_of, option  # noqa: E402

import jaxctc  # noqa: E402

VALIDATION_SEED = 1_000_033  # the validation lines' rendering: never a training seed
SPACE_ID = data.TEXT_ALPHABET.index(" ") + 1
LABELS = [""] + list(data.TEXT_ALPHABET)  # each class's text, "" for the blank


@dataclasses.dataclass
class Config:
    """The run's settings; the defaults give the README's table.

    The training settings (``steps`` to ``eval_every``) go to ``train.py``
    with ``text="real"``; a workdir whose checkpoint has reached ``steps``
    is read with the settings it was trained with (its ``config.json``).
    """

    workdir: str = option(
        "workdir/crnn-text", "folder of the model (train.py's files) and the results"
    )
    steps: int = option(600, help_of("steps"))
    batch_size: int = option(32, help_of("batch_size"))
    width: int = option(256, help_of("width"))
    max_len: int = option(24, help_of("max_len"))
    channels: tuple[int, ...] = option((16, 32, 64, 64), help_of("channels"))
    hidden: int = option(96, help_of("hidden"))
    eval_every: int = option(200, help_of("eval_every"))
    test_size: int = option(1000, "held-out test lines")
    validation_size: int = option(300, "validation lines that tune the LM")
    order: int = option(3, "n-gram order of the word LM")
    beam_width: int = option(16, "beam width of both beam searches")
    weights: tuple[float, ...] = option(
        (0.25, 0.5, 0.75, 1.0, 1.5), "LM weights tried on validation"
    )
    word_bonuses: tuple[float, ...] = option(
        (0.0, 1.0, 2.0, 3.0), "word bonuses tried on validation"
    )
    unk_score: float = option(-10.0, "score of a word not in the LM (natural log)")
    decode_batch_size: int = option(200, "lines per decoding batch")
    progress: bool = option(True, "show progress bars")

    def train_config(self) -> train.Config:
        return train.Config(
            workdir=self.workdir,
            text="real",
            steps=self.steps,
            batch_size=self.batch_size,
            width=self.width,
            max_len=self.max_len,
            channels=self.channels,
            hidden=self.hidden,
            eval_every=self.eval_every,
            test_size=self.test_size,
            eval_batch_size=min(self.decode_batch_size, self.test_size),
            progress=self.progress,
        )


def trained_model(config: Config):
    """The workdir's model at ``config.steps``, training or resuming first."""
    workdir = Path(config.workdir)
    step = None
    if (workdir / "checkpoints").exists():
        step = train.checkpointer(workdir).latest_step()
    if step is None or step < config.steps:
        train.main(config.train_config())
    model, model_config = predict.load_model(workdir)
    if model_config.text != "real":
        raise ValueError(f"{workdir} holds a model of {model_config.text!r} text.")
    history = json.loads((workdir / "history.json").read_text())
    return model, model_config, history


@nnx.jit
def _logits(model, images):
    return model(images)


def logits_of(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's logits ``[N, T, K]`` for images ``[N, H, W]`` (eval mode)."""
    model.eval()
    parts = [
        np.asarray(_logits(model, jnp.asarray(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts)


@jax.jit
def _greedy(logits):
    paddings = jnp.zeros(logits.shape[:2], jnp.float32)
    hyp = jaxctc.greedy_decode(logits, paddings, blank_id=data.BLANK_ID)
    return hyp.labels, hyp.label_paddings


@functools.partial(jax.jit, static_argnames=("beam_width",))
def _beam(logits, scorers, beam_width):
    # The scorers are a pytree argument: the LM's weight and bonus are
    # leaves, so the tuning grid reuses one compiled search.
    paddings = jnp.zeros(logits.shape[:2], jnp.float32)
    hyp = jaxctc.prefix_beam_search(
        logits,
        paddings,
        beam_width=beam_width,
        blank_id=data.BLANK_ID,
        scorers=scorers,
    )
    return hyp.labels[:, 0], hyp.label_paddings[:, 0]


def decode(logits, config: Config, scorers=None, progress=None):
    """Best hypotheses ``(labels [N, L], label_paddings [N, L])``.

    Greedy when ``scorers`` is None, else the beam search with ``scorers``
    (``()`` for none).
    """
    out = []
    for i in range(0, len(logits), config.decode_batch_size):
        part = jnp.asarray(logits[i : i + config.decode_batch_size])
        if scorers is None:
            out.append(jax.device_get(_greedy(part)))
        else:
            out.append(jax.device_get(_beam(part, scorers, config.beam_width)))
        if progress is not None:
            progress.update(len(part))
    return tuple(np.concatenate(x) for x in zip(*out, strict=True))


def rates(hyp: tuple, ref: data.Batch) -> dict:
    """Corpus-level WER and CER of hypotheses against the references."""
    args = (*hyp, ref.labels, ref.label_paddings)
    return {
        "wer": float(jaxctc.word_error_rate(*args, separator_id=SPACE_ID)),
        "cer": float(jaxctc.char_error_rate(*args)),
    }


def with_weights(lm: jaxctc.NGramLM, weight: float, word_bonus: float):
    """``lm`` with another weight and word bonus (same tables, no recompile)."""
    return dataclasses.replace(
        lm, weight=jnp.float32(weight), bonus=jnp.float32(word_bonus)
    )


def main(config: Config) -> dict:
    """Trains (or reuses), tunes on validation, decodes the test lines."""
    workdir = Path(config.workdir)
    model, model_config, history = trained_model(config)
    max_len = model_config.max_len
    renderer, test = train.make_data(model_config)
    parts = corpus.split(data.TEXT_ALPHABET)
    validation_lines = corpus.lines(parts.validation, max_len)
    validation_lines = validation_lines[: config.validation_size]
    validation = renderer.render(
        validation_lines, np.random.default_rng(VALIDATION_SEED)
    )

    # The LM's text: the training sentences, cut into lines the way the test
    # sentences are, so that <s> and </s> stand where a line starts and ends.
    lm_text = corpus.lines(parts.train, max_len)
    arpa = workdir / f"lm{config.order}.arpa"
    clock = time.perf_counter()
    ngrams = corpus.build_arpa(lm_text, arpa, config.order)
    build_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    lm = jaxctc.NGramLM.from_arpa(
        arpa, LABELS, word_delimiter=" ", unk_score=config.unk_score
    )
    load_seconds = time.perf_counter() - clock
    vocabulary = {w for line in lm_text for w in line.split()}
    test_texts = data.decode(test.labels, test.label_paddings, data.TEXT_ALPHABET)
    test_words = [w for line in test_texts for w in line.split()]

    validation_logits = logits_of(model, validation.images, config.decode_batch_size)
    test_logits = logits_of(model, test.images, config.decode_batch_size)

    progress = None
    if config.progress:
        from tqdm import tqdm

        grid_lines = len(config.weights) * len(config.word_bonuses)
        total = len(validation_lines) * (grid_lines + 2) + 3 * len(test_texts)
        progress = tqdm(total=total, unit="line", desc="decoding", dynamic_ncols=True)

    # Tuning: the grid's best WER on the validation lines (ties: best CER).
    # The decoders without the LM run there too, so every test decode below
    # is timed compiled.
    grid = []
    baseline = {
        "greedy": rates(decode(validation_logits, config, None, progress), validation),
        "beam": rates(decode(validation_logits, config, (), progress), validation),
    }
    for weight in config.weights:
        for bonus in config.word_bonuses:
            scorer = with_weights(lm, weight, bonus)
            hyp = decode(validation_logits, config, (scorer,), progress)
            grid.append(
                {"weight": weight, "word_bonus": bonus, **rates(hyp, validation)}
            )
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    scorer = with_weights(lm, best["weight"], best["word_bonus"])

    seconds, hyps, results = {}, {}, {}
    for name, scorers in (("greedy", None), ("beam", ()), ("beam_lm", (scorer,))):
        clock = time.perf_counter()
        hyps[name] = decode(test_logits, config, scorers, progress)
        seconds[name] = time.perf_counter() - clock
        results[name] = rates(hyps[name], test)
    if progress is not None:
        progress.close()
    texts = {name: data.decode(*hyp, data.TEXT_ALPHABET) for name, hyp in hyps.items()}
    results["beam"]["beam_width"] = config.beam_width
    results["beam_lm"].update(
        beam_width=config.beam_width,
        weight=best["weight"],
        word_bonus=best["word_bonus"],
        unk_score=config.unk_score,
    )
    metrics = {
        **results,
        "wer_reduction": 1 - results["beam_lm"]["wer"] / results["beam"]["wer"],
        "cer_reduction": 1 - results["beam_lm"]["cer"] / results["beam"]["cer"],
        "lm": {
            "order": config.order,
            "ngrams": ngrams,
            "builder": "kaldingram (back-off Kneser-Ney)",
            "text_lines": len(lm_text),
            "text_words": sum(len(line.split()) for line in lm_text),
            "vocabulary": len(vocabulary),
            "build_seconds": build_seconds,
            "load_seconds": load_seconds,
        },
        "test": {
            "lines": len(test_texts),
            "words": len(test_words),
            "chars": int(np.sum(test.label_paddings == 0)),
            "oov_rate": float(np.mean([w not in vocabulary for w in test_words])),
        },
        "validation": {
            "lines": len(validation_lines),
            **baseline,
            "grid": grid,
        },
        "train": {
            "steps": model_config.steps,
            "batch_size": model_config.batch_size,
            "train_seconds": history["train_seconds"],
        },
        "decode_seconds": seconds,
        "samples": [
            {"truth": truth, **{name: texts[name][i] for name in texts}}
            for i, truth in enumerate(test_texts[:12])
        ],
    }
    (workdir / "lm_metrics.json").write_text(json.dumps(metrics, indent=2))
    plots.lm_comparison(metrics, workdir / "lm.png")
    return metrics


def table(metrics: dict) -> str:
    """The test results as a Markdown table."""
    rows = [
        "| decoder (test lines) | WER | CER |",
        "|---|---|---|",
    ]
    names = {
        "greedy": "greedy",
        "beam": f"beam (W={metrics['beam']['beam_width']})",
        "beam_lm": f"beam (W={metrics['beam_lm']['beam_width']}) + word "
        f"{metrics['lm']['order']}-gram LM",
    }
    for key, name in names.items():
        rows.append(
            f"| {name} | {100 * metrics[key]['wer']:.1f}% "
            f"| {100 * metrics[key]['cer']:.1f}% |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    result = main(train.parse_args(None, Config, __doc__))
    print(table(result))
    print(
        f"LM: WER {100 * result['wer_reduction']:.1f}% lower than the beam "
        f"without it (weight {result['beam_lm']['weight']}, word bonus "
        f"{result['beam_lm']['word_bonus']}, tuned on "
        f"{result['validation']['lines']} validation lines)"
    )
