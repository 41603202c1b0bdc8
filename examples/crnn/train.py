"""Trains the CRNN text recognizer from scratch on synthetic lines with jaxctc.

Run ``python examples/crnn/train.py`` (the defaults do the real job) or
``python examples/crnn/train.py --steps 300 --workdir /tmp/crnn`` for a quick
look. ``--text real`` trains on lines of English text instead of random
strings (see ``corpus.py``; ``lm_eval.py`` trains that way and decodes with a
language model). Everything lands in ``--workdir``: Orbax checkpoints (a rerun with the
same workdir resumes), ``metrics.json``, ``history.json``, ``curve.png`` and
``samples.png``.
"""

from __future__ import annotations

import argparse
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
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402
import data  # noqa: E402
import plots  # noqa: E402
from model import CRNN  # noqa: E402

import jaxctc  # noqa: E402


def option(default, help: str):
    """A ``Config`` field: its default and the ``--help`` line of its flag."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Config:
    """The run's settings; the defaults train to the README's figures."""

    workdir: str = option(
        "workdir/crnn",
        "folder for checkpoints, metrics and plots; a rerun with the same one resumes",
    )
    text: str = option(
        "random",
        "'random': strings over 0-9A-Z; 'real': runs of words of English "
        "sentences over 0-9A-Z and the space (see corpus.py)",
    )
    steps: int = option(2000, "training steps")
    batch_size: int = option(64, "training lines per step (all devices together)")
    learning_rate: float = option(2e-3, "AdamW peak learning rate")
    warmup_steps: int = option(
        300, "linear warmup steps (at most a fifth of the run), then cosine decay"
    )
    weight_decay: float = option(1e-4, "AdamW weight decay")
    height: int = option(32, "image height in pixels")
    width: int = option(128, "image width in pixels (one frame per 4 columns)")
    max_len: int = option(12, "most characters per line")
    fonts: tuple[str, ...] = option(data.FONTS, "fonts the lines are drawn in")
    channels: tuple[int, ...] = option(
        (16, 32, 64, 64), "channels of the four convolutions"
    )
    hidden: int = option(96, "LSTM features per direction")
    test_size: int = option(1000, "held-out lines for the CER")
    eval_batch_size: int = option(200, "lines per evaluation batch")
    eval_every: int = option(500, "steps between evaluations on the held-out set")
    checkpoint_every: int = option(250, "steps between checkpoints")
    beam_width: int = option(8, "beam width of the final beam-search evaluation")
    seed: int = option(0, "seed of the model's initialization and the training data")
    progress: bool = option(True, "show a progress bar")


def help_of(name: str) -> str:
    """The ``--help`` line of ``Config``'s field ``name`` (for configs that
    pass it on)."""
    return next(
        f.metadata["help"] for f in dataclasses.fields(Config) if f.name == name
    )


def alphabet(config: Config) -> str:
    """The characters of classes 1, 2, ... (class 0 is the blank)."""
    if config.text not in ("random", "real"):
        raise ValueError(f"`text` must be 'random' or 'real', got {config.text!r}.")
    return data.TEXT_ALPHABET if config.text == "real" else data.ALPHABET


def make_data(config: Config) -> tuple[data.Renderer, data.Batch]:
    """The training lines' renderer and the held-out set, both of ``config.text``."""
    if alphabet(config) == data.ALPHABET:
        renderer = data.Renderer(
            config.height, config.width, config.max_len, config.fonts
        )
        return renderer, data.test_set(renderer, config.test_size)
    parts = corpus.split(data.TEXT_ALPHABET)
    renderer = data.Renderer(
        config.height,
        config.width,
        config.max_len,
        config.fonts,
        alphabet=data.TEXT_ALPHABET,
        texts=corpus.RandomLines(parts.train, config.max_len),
    )
    lines = corpus.lines(parts.test, config.max_len)[: config.test_size]
    return renderer, renderer.render(lines, np.random.default_rng(data.TEST_SEED))


def make_model(config: Config, seed: int = 0) -> CRNN:
    return CRNN(
        len(alphabet(config)) + 1,
        height=config.height,
        channels=config.channels,
        hidden=config.hidden,
        rngs=nnx.Rngs(seed),
    )


def make_optimizer(model: CRNN, config: Config) -> nnx.Optimizer:
    # Linear warmup (at most a fifth of a short run), then cosine decay to 1%.
    warmup = max(1, min(config.warmup_steps, config.steps // 5))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        warmup,
        max(config.steps, warmup + 1),
        end_value=config.learning_rate * 0.01,
    )
    tx = optax.chain(
        optax.clip_by_global_norm(5.0),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def frame_paddings(logits: jax.Array) -> jax.Array:
    """Every frame of a fixed-width line is valid: zeros ``[B, T]``."""
    return jnp.zeros(logits.shape[:2], jnp.float32)


@nnx.jit
def train_step(model, optimizer, images, labels, label_paddings):
    def loss_fn(model):
        logits = model(images)
        losses = jaxctc.ctc_loss(logits, frame_paddings(logits), labels, label_paddings)
        return jnp.mean(losses)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def decode(logits, logit_paddings, decoder: str, beam_width: int):
    """Best hypothesis per line: ``(labels [B, L], label_paddings [B, L])``."""
    if decoder == "greedy":
        hyp = jaxctc.greedy_decode(logits, logit_paddings, blank_id=data.BLANK_ID)
        return hyp.labels, hyp.label_paddings
    hyp = jaxctc.prefix_beam_search(
        logits,
        logit_paddings,
        beam_width=beam_width,
        top_paths=1,
        blank_id=data.BLANK_ID,
    )
    return hyp.labels[:, 0], hyp.label_paddings[:, 0]


@functools.partial(nnx.jit, static_argnames=("decoder", "beam_width"))
def evaluate_batch(model, images, labels, label_paddings, decoder, beam_width):
    """Hypotheses, their exact log P(text | image) and their edit distances."""
    logits = model(images)
    paddings = frame_paddings(logits)
    hyp_labels, hyp_paddings = decode(logits, paddings, decoder, beam_width)
    distances = jaxctc.edit_distance(hyp_labels, hyp_paddings, labels, label_paddings)
    # log P(text | image), summed over every alignment of the decoded text
    # (exact rescoring: the negated CTC loss of the hypothesis); exp of it is
    # the model's confidence in the text.
    log_prob = jaxctc.sequence_log_probs(
        logits, paddings, hyp_labels, hyp_paddings, blank_id=data.BLANK_ID
    )
    return hyp_labels, hyp_paddings, log_prob, distances


def evaluate(model, test: data.Batch, config: Config, sharding, decoder="greedy"):
    """CER and sequence accuracy on the held-out set, and the transcriptions."""
    model.eval()
    edits, correct, outputs = 0, 0, []
    for i in range(0, len(test.images), config.eval_batch_size):
        part = [x[i : i + config.eval_batch_size] for x in test]
        part = jax.device_put(part, sharding)
        labels, paddings, log_prob, distances = evaluate_batch(
            model, *part, decoder, config.beam_width
        )
        distances = np.asarray(distances)
        edits += int(distances.sum())
        correct += int(np.sum(distances == 0))
        outputs.append((np.asarray(labels), np.asarray(paddings), np.asarray(log_prob)))
    model.train()
    chars = int(np.sum(test.label_paddings == 0))
    return {
        "cer": edits / chars,
        "seq_acc": correct / len(test.images),
        "texts": [
            t
            for lab, pad, _ in outputs
            for t in data.decode(lab, pad, alphabet(config))
        ],
        "log_probs": np.concatenate([lp for _, _, lp in outputs]),
    }


def checkpointer(workdir: Path):
    """The Orbax manager of ``workdir/checkpoints`` (items model, optimizer)."""
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        item_names=("model", "optimizer"),
    )


def restore_checkpoint(manager, step, model, optimizer=None):
    """Loads checkpoint ``step`` into ``model`` (and ``optimizer``) in place."""
    import orbax.checkpoint as ocp

    def abstract(module):
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            nnx.state(module),
        )

    items = {"model": ocp.args.StandardRestore(abstract(model))}
    if optimizer is not None:
        items["optimizer"] = ocp.args.StandardRestore(abstract(optimizer))
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    nnx.update(model, restored["model"])
    if optimizer is not None:
        nnx.update(optimizer, restored["optimizer"])


def main(config: Config) -> dict:
    """Trains (or resumes) and evaluates; returns the final metrics."""
    import orbax.checkpoint as ocp

    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(
        json.dumps(dataclasses.asdict(config), indent=2)
    )
    devices = jax.devices()
    if config.batch_size % len(devices) or config.eval_batch_size % len(devices):
        raise ValueError(
            f"batch sizes must be multiples of the {len(devices)} devices."
        )
    mesh = Mesh(np.array(devices), ("data",))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())

    model = make_model(config, config.seed)
    optimizer = make_optimizer(model, config)
    state = nnx.state((model, optimizer))
    nnx.update((model, optimizer), jax.device_put(state, replicated))

    manager = checkpointer(workdir)
    history_file = workdir / "history.json"
    history = {"loss": [], "eval": [], "train_seconds": 0.0}
    start = 0
    if manager.latest_step() is not None:
        start = manager.latest_step()
        restore_checkpoint(manager, start, model, optimizer)
        if history_file.exists():
            history = json.loads(history_file.read_text())
        history["loss"] = [h for h in history["loss"] if h[0] <= start]
        history["eval"] = [h for h in history["eval"] if h[0] <= start]
        print(f"resumed from step {start} in {workdir}", flush=True)

    renderer, test = make_data(config)

    def save(step):
        manager.save(
            step,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(nnx.state(model)),
                optimizer=ocp.args.StandardSave(nnx.state(optimizer)),
            ),
        )
        manager.wait_until_finished()
        history_file.write_text(json.dumps(history))

    batches = data.train_batches(renderer, config.batch_size, config.seed, start)
    progress = None
    if config.progress:
        from tqdm import tqdm

        progress = tqdm(
            total=config.steps, initial=start, unit="step", dynamic_ncols=True
        )
    clock = time.perf_counter()
    window_start, window_images, window_losses = clock, 0, []
    per_device_batch = None
    for step in range(start + 1, config.steps + 1):
        batch = jax.device_put(tuple(next(batches)), batch_sharding)
        if per_device_batch is None:
            per_device_batch = batch[0].addressable_shards[0].data.shape[0]
        window_losses.append(train_step(model, optimizer, *batch))
        window_images += config.batch_size
        if step % 25 == 0 or step == config.steps:
            loss_value = float(np.mean(jax.device_get(window_losses)))
            window_losses = []
            history["loss"].append((step, loss_value))
            now = time.perf_counter()
            rate = window_images / (now - window_start)
            window_start, window_images = now, 0
            if progress is not None:
                # Updated only where the loss is fetched: steps are dispatched
                # asynchronously, so per-step counts would come in bursts.
                progress.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{rate:.0f}")
                progress.update(step - progress.n)
        if step % config.eval_every == 0 or step == config.steps:
            result = evaluate(model, test, config, batch_sharding)
            history["eval"].append((step, result["cer"], result["seq_acc"]))
            message = (
                f"step {step}: test CER {result['cer']:.4f}, "
                f"sequence accuracy {result['seq_acc']:.4f}"
            )
            if progress is not None:
                progress.write(message)
            else:
                print(message, flush=True)
        if step % config.checkpoint_every == 0 or step == config.steps:
            history["train_seconds"] += time.perf_counter() - clock
            clock = time.perf_counter()
            save(step)
    batches.close()
    if progress is not None:
        progress.close()
    history["train_seconds"] += time.perf_counter() - clock

    if (
        history["eval"]
        and history["eval"][-1][0] == config.steps
        and start < config.steps
    ):
        greedy = result  # the last step's evaluation
    else:
        greedy = evaluate(model, test, config, batch_sharding)
    metrics = {
        "cer": greedy["cer"],
        "seq_acc": greedy["seq_acc"],
        "greedy": {"cer": greedy["cer"], "seq_acc": greedy["seq_acc"]},
        "steps": config.steps,
        "resumed_from": start,
        "train_seconds": history["train_seconds"],
        "test_size": len(test.images),
        "devices": len(devices),
        "per_device_batch": per_device_batch,
        "final_loss": history["loss"][-1][1] if history["loss"] else None,
    }
    beam = evaluate(model, test, config, batch_sharding, decoder="beam")
    metrics["beam"] = {
        "cer": beam["cer"],
        "seq_acc": beam["seq_acc"],
        "beam_width": config.beam_width,
    }
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    history_file.write_text(json.dumps(history))
    plots.training_curve(history, workdir / "curve.png")
    count = 24
    plots.prediction_grid(
        test.images[:count],
        data.decode(test.labels[:count], test.label_paddings[:count], alphabet(config)),
        beam["texts"][:count],
        np.exp(beam["log_probs"][:count]),
        workdir / "samples.png",
    )
    return metrics


def parse_args(argv=None, config_type=Config, description: str = __doc__):
    """A ``config_type`` dataclass from the command line: a flag per field,
    with its meaning (the field's ``help``) and its default in ``--help``."""
    parser = argparse.ArgumentParser(
        description=description.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(config_type):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        kwargs = dict(default=default, help=field.metadata["help"])
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(default, tuple):
            kind = type(default[0])
            parser.add_argument(flag, type=kind, nargs="+", **kwargs)
        else:
            parser.add_argument(flag, type=type(default), **kwargs)
    args = parser.parse_args(argv)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}
    return config_type(**values)


if __name__ == "__main__":
    print(json.dumps(main(parse_args()), indent=2))
