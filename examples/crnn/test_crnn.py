"""Smoke tests of the CRNN example: a few steps of the real pipeline."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import corpus  # noqa: E402
import data  # noqa: E402
import lm_eval  # noqa: E402
import predict  # noqa: E402
import train  # noqa: E402

SMALL = dict(
    batch_size=8,
    test_size=16,
    eval_batch_size=8,
    eval_every=2,
    checkpoint_every=2,
    warmup_steps=1,
    channels=(8, 8, 8, 8),
    hidden=16,
    progress=False,
)


@pytest.fixture(autouse=True)
def standard_promotion():
    """The example runs as users run it, with JAX's default dtype promotion:
    the suite's strict promotion refuses optax's Adam, which raises float
    scalars to an int32 power."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.mark.parametrize("module", [train, lm_eval])
def test_help_shows_every_option_with_its_meaning_and_default(module, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"], module.Config, module.__doc__)
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(module.Config):
        flag = "--" + field.name.replace("_", "-")
        help_text = " ".join(field.metadata["help"].split())
        assert f"{flag} " in text
        assert f"{help_text} (default: {field.default})" in text


def test_renderer_is_deterministic_and_labels_round_trip():
    renderer = data.Renderer()
    first = renderer.batch(np.random.default_rng([3, 7]), 6)
    again = renderer.batch(np.random.default_rng([3, 7]), 6)
    np.testing.assert_array_equal(first.images, again.images)
    assert first.images.shape == (6, 32, 128) and first.images.dtype == np.float32
    assert 0.0 <= first.images.min() and first.images.max() <= 1.0
    texts = data.decode(first.labels, first.label_paddings)
    assert all(1 <= len(t) <= 12 for t in texts)
    labels, paddings = data.encode(texts, 12)
    np.testing.assert_array_equal(labels, first.labels)
    np.testing.assert_array_equal(paddings, first.label_paddings)


class FixedLogits(nnx.Module):
    """A stand-in model that returns the same logits for any images."""

    def __init__(self, logits):
        self.logits = nnx.Variable(jnp.asarray(logits))

    def __call__(self, images):
        return self.logits[...]


def test_read_gives_the_greedy_paths_runs():
    # Frames A A - B B B - - B, then a padded frame: "ABB", the second B
    # starting after two blanks. Spans are [first, end) frames of each run.
    a, b = data.ALPHABET.index("A") + 1, data.ALPHABET.index("B") + 1
    path = [a, a, 0, b, b, b, 0, 0, b, a]
    logits = np.full((1, len(path), len(data.ALPHABET) + 1), -5.0, np.float32)
    logits[0, np.arange(len(path)), path] = 5.0
    paddings = np.zeros((1, len(path)), np.float32)
    paddings[0, -1] = 1.0
    (reading,) = predict.read(FixedLogits(logits), np.zeros((1, 32, 40)), paddings)
    assert reading.text == "ABB"
    assert reading.spans == [("A", 0, 2), ("B", 3, 6), ("B", 8, 9)]
    assert 0.9 < reading.confidence <= 1.0


def test_train_resume_and_predict(tmp_path):
    workdir = tmp_path / "run"
    first = train.main(train.Config(workdir=str(workdir), steps=2, **SMALL))
    assert first["resumed_from"] == 0
    second = train.main(train.Config(workdir=str(workdir), steps=4, **SMALL))
    # The second run restarts from the first one's last checkpoint, not from 0.
    assert second["resumed_from"] == 2 and second["steps"] == 4
    history = json.loads((workdir / "history.json").read_text())
    assert [e[0] for e in history["eval"]] == [2, 4]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics == second
    assert 0.0 <= metrics["cer"] and 0.0 <= metrics["seq_acc"] <= 1.0
    assert np.isfinite(metrics["final_loss"]) and metrics["train_seconds"] > 0
    assert 0.0 <= metrics["beam"]["cer"] and 0.0 <= metrics["beam"]["seq_acc"] <= 1
    for name in ("curve.png", "samples.png"):
        assert (workdir / name).stat().st_size > 1000

    renderer = data.Renderer()
    line = data.test_set(renderer, 1, seed=5)
    image = tmp_path / "line.png"
    from PIL import Image

    Image.fromarray((255 * line.images[0]).astype(np.uint8)).save(image)
    (reading,) = predict.main([str(image), "--workdir", str(workdir)])
    assert 0.0 <= reading.confidence <= 1.0
    assert len(reading.spans) == len(reading.text)
    assert "".join(c for c, _, _ in reading.spans) == reading.text
    assert all(0 <= s < e <= 32 for _, s, e in reading.spans)


@pytest.mark.parametrize("devices", [2])
def test_data_parallel_over_a_mesh(tmp_path, devices):
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import jax, train
        assert jax.device_count() == {devices}
        metrics = train.main(train.Config(
            workdir={str(tmp_path)!r}, steps=2, batch_size=8, test_size=8,
            eval_batch_size=8, eval_every=2, warmup_steps=1, progress=False))
        print(json.dumps(metrics))
        """
    )
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(  # after the suite's own (conftest.py)
        [env.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={devices}"]
    ).strip()
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["devices"] == devices
    assert metrics["per_device_batch"] == 8 // devices
    assert np.isfinite(metrics["final_loss"])


def test_corpus_split_is_disjoint_and_in_the_alphabet():
    parts = corpus.split(data.TEXT_ALPHABET)
    train_set, validation, test = map(set, parts)
    assert not train_set & test and not validation & test
    assert not train_set & validation
    assert len(test) > 100 and len(validation) > 50
    lines = corpus.lines(parts.test, 24)
    assert all(0 < len(line) <= 24 and line == line.strip() for line in lines)
    assert set("".join(lines)) <= set(data.TEXT_ALPHABET)
    drawn = corpus.RandomLines(parts.train, 24)(np.random.default_rng(0), 50)
    assert all(0 < len(line) <= 24 and line == line.strip() for line in drawn)


def test_real_text_lm_eval(tmp_path):
    config = lm_eval.Config(
        workdir=str(tmp_path / "text"),
        steps=2,
        batch_size=8,
        channels=(8, 8, 8, 8),
        hidden=16,
        eval_every=2,
        test_size=16,
        validation_size=8,
        weights=(0.5, 1.0),
        word_bonuses=(1.0,),
        decode_batch_size=8,
        progress=False,
    )
    metrics = lm_eval.main(config)
    written = json.loads((tmp_path / "text" / "lm_metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    for name in ("greedy", "beam", "beam_lm"):
        assert set(metrics[name]) >= {"wer", "cer"}
        assert all(np.isfinite(metrics[name][k]) for k in ("wer", "cer"))
        assert metrics[name]["wer"] >= 0 and metrics[name]["cer"] >= 0
    assert metrics["beam_lm"]["weight"] in config.weights
    assert np.isfinite(metrics["wer_reduction"])
    assert metrics["test"]["lines"] == 16 and metrics["validation"]["lines"] == 8
    assert len(metrics["validation"]["grid"]) == 2
    assert int(metrics["lm"]["ngrams"]["3"]) > 1000
    assert (tmp_path / "text" / "lm.png").stat().st_size > 1000
    # Called again, it reuses the checkpoint instead of training (which would
    # rewrite the history with more seconds).
    _, model_config, history = lm_eval.trained_model(config)
    assert model_config.text == "real" and model_config.steps == 2
    assert history["train_seconds"] == metrics["train"]["train_seconds"]
