"""bf16 logits: float32 accumulation inside, results within stated tolerances.

bf16 keeps 8 significant bits (about 3 decimal digits): rounding a logit moves
it by at most ``|x| * 2**-9``. Two kinds of check follow.

* Float32 accumulation: upcasting bf16 to float32 is exact, so every function
  given bf16 logits must give exactly what it gives on those same values in
  float32 (and a bf16 gradient must be that float32 gradient rounded once).
* Against the unrounded float32 logits: each frame's log-softmax moves by at
  most ``2 * max_k |dx_k|`` (the logit itself plus the log-normalizer), so any
  score that is a log-sum or max over paths of per-frame sums (the loss, the
  best path's log-probability) moves by at most the sum of those over valid
  frames. That bound, computed from the actual rounding, is the tolerance.
  Gradients and posteriors are probabilities in [-1, 1]; their tolerance,
  ``0.02`` absolute, is about ten times what bf16 rounding of logits of
  scale 2 moves them on these inputs (measured ~0.005).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc

B, T, K, N = 4, 20, 6, 5


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(B, T, K)) * 2.0).astype(np.float32)
    logit_paddings = np.zeros((B, T), np.float32)
    logit_paddings[1, 15:] = 1.0
    logit_paddings[3, :3] = 1.0
    labels = rng.integers(1, K, size=(B, N)).astype(np.int32)
    label_paddings = np.zeros((B, N), np.float32)
    label_paddings[2, 3:] = 1.0
    bf16 = jnp.asarray(logits, jnp.bfloat16)
    rounded = np.asarray(bf16.astype(jnp.float32))
    return logits, bf16, rounded, logit_paddings, labels, label_paddings


def _score_bound(logits, rounded, logit_paddings):
    """``sum_t 2 max_k |dx|`` over valid frames, per sequence, plus float32 slack."""
    per_frame = 2.0 * np.max(np.abs(rounded - logits), axis=2)
    return np.sum(per_frame * (1.0 - logit_paddings), axis=1) + 1e-4


def test_bf16_loss_and_gradient(inputs):
    logits, bf16, rounded, p, y, q = inputs

    @jax.jit
    def loss_and_grad(x):
        def total(x):
            return jaxctc.ctc_loss(x, p, y, q).sum()

        return jax.value_and_grad(total)(x), jaxctc.ctc_loss(x, p, y, q)

    (total_b, grad_b), loss_b = loss_and_grad(bf16)
    (_, grad_r), loss_r = loss_and_grad(rounded)
    (_, grad_f), loss_f = loss_and_grad(logits)
    assert loss_b.dtype == jnp.float32 and grad_b.dtype == jnp.bfloat16
    # Float32 inside: the same loss as float32 on the rounded values, and the
    # gradient is that float32 gradient rounded to bf16 once.
    np.testing.assert_array_equal(loss_b, loss_r)
    np.testing.assert_array_equal(grad_b, grad_r.astype(jnp.bfloat16))
    # Against unrounded float32.
    assert np.all(np.abs(loss_b - loss_f) <= _score_bound(logits, rounded, p))
    np.testing.assert_allclose(np.asarray(grad_b, np.float32), grad_f, atol=0.02)


def test_bf16_forward_probs(inputs):
    logits, bf16, rounded, p, y, q = inputs
    fn = jax.jit(jaxctc.ctc_loss_with_forward_probs)
    got, same, ref = fn(bf16, p, y, q), fn(rounded, p, y, q), fn(logits, p, y, q)
    for g, s in zip(got, same, strict=True):
        assert g.dtype == jnp.float32
        np.testing.assert_array_equal(g, s)
    bound = _score_bound(logits, rounded, p)
    assert np.all(np.abs(got[0] - ref[0]) <= bound)
    # The forward variables of the full prefix (last valid frame, all labels)
    # obey the same bound; earlier entries are partial sums of the same kind.
    blank_g, blank_f = np.asarray(got[1][-1]), np.asarray(ref[1][-1])
    num_labels = np.sum(q == 0, axis=1)
    rows = np.arange(B)
    assert np.all(
        np.abs(blank_g[rows, num_labels] - blank_f[rows, num_labels]) <= bound
    )


def test_bf16_forced_align(inputs):
    logits, bf16, rounded, p, y, q = inputs
    fn = jax.jit(jaxctc.forced_align)
    got, same, ref = fn(bf16, p, y, q), fn(rounded, p, y, q), fn(logits, p, y, q)
    assert got.log_probs.dtype == jnp.float32
    for g, s in zip(got, same, strict=True):
        np.testing.assert_array_equal(g, s)
    # The best path's log-probability moves by at most the bound; and the
    # bf16 path, scored under the float32 model, is within twice the bound of
    # the float32 optimum (a near-tie may swap paths, not lose probability).
    bound = _score_bound(logits, rounded, p)
    assert np.all(np.abs(got.log_probs - ref.log_probs) <= bound)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    path = np.asarray(got.frame_labels)
    chosen = np.take_along_axis(log_probs, np.maximum(path, 0)[:, :, None], 2)[..., 0]
    rescored = np.sum(np.where(path >= 0, chosen, 0.0), axis=1)
    assert np.all(rescored <= ref.log_probs + 1e-4)
    assert np.all(rescored >= ref.log_probs - 2 * bound)


def test_bf16_posteriors(inputs):
    logits, bf16, rounded, p, y, q = inputs
    fn = jax.jit(jaxctc.posteriors)
    got, same, ref = fn(bf16, p, y, q), fn(rounded, p, y, q), fn(logits, p, y, q)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, same)
    np.testing.assert_allclose(got, ref, atol=0.02)
    np.testing.assert_allclose(np.sum(got, axis=2), 1.0 - p, atol=1e-5)


@pytest.mark.parametrize("name", ["greedy_decode", "prefix_beam_search"])
def test_bf16_decoders(inputs, name):
    _, bf16, rounded, p, _, _ = inputs
    fn = jax.jit(getattr(jaxctc, name))
    got, same = jax.tree.leaves(fn(bf16, p)), jax.tree.leaves(fn(rounded, p))
    for g, s in zip(got, same, strict=True):
        np.testing.assert_array_equal(g, s)
