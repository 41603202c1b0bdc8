"""Streaming decoding: every chunking of the frames gives the one-shot result.

The reference is the one-shot decoder (itself tested against brute force and
the float64 textbook search): labels, paddings, spans and ranking identical,
scores to float rounding. Chunks are cut at sizes 1, 7, 40 and T and at
uneven sizes, the last chunk padded to the chunk size with ``paddings = 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxctc
from jaxctc import Hotwords, Lexicon, NGramLM
from tests import arpa_references as aref
from tests import references as ref
from tests.devices import run_on_8_devices
from tests.test_hotwords import LABELS, WORDS, random_logits

EXACT = ("labels", "label_paddings", "starts", "ends")


def chunks(logits, paddings, sizes):
    """``(logits, paddings)`` cut at ``sizes`` (repeated to cover every
    frame), each chunk padded to the largest size with ``paddings = 1``, and
    the stream they make (padded frames count in the frame numbers)."""
    sizes, frames, size = list(sizes), logits.shape[1], max(sizes)
    start, i, out = 0, 0, []
    while start < frames:
        stop = min(start + sizes[i % len(sizes)], frames)
        x = np.zeros((logits.shape[0], size, logits.shape[2]), logits.dtype)
        p = np.ones((logits.shape[0], size), np.float32)
        x[:, : stop - start] = logits[:, start:stop]
        p[:, : stop - start] = paddings[:, start:stop]
        out.append((x, p))
        start, i = stop, i + 1
    whole = tuple(np.concatenate(a, axis=1) for a in zip(*out, strict=True))
    return out, whole


def stream(init, update, pieces):
    state = init
    for x, p in pieces:
        state = update(state, x, p)
    return state


def assert_same(got, want):
    for field in EXACT:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), field)
    np.testing.assert_allclose(got.log_probs, want.log_probs, rtol=1e-5, atol=1e-5)
    if want.scores is not None:
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)


SIZES = [(1,), (7,), (40,), (45,), (3, 11, 1, 20)]


def beam_case(kind, seed, frames=45):
    rng = np.random.default_rng(seed)
    if kind == "random":
        logits, paddings = ref.random_batch(rng, 4, frames, 6)
        return logits.astype(np.float32), paddings.astype(np.float32)
    # Model-like at K = 300: 4 candidates first, exact re-runs on some frames.
    logits, paddings = ref.model_like_logits(rng, 4, frames, 300)
    return logits, paddings.astype(np.float32)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("kind", ["random", "model-like"])
def test_beam_search_over_chunks_equals_one_shot(kind, sizes):
    logits, paddings = beam_case(kind, len(sizes) + 3 * len(kind))
    batch, frames, classes = logits.shape
    pieces, (x, p) = chunks(logits, paddings, sizes)
    want = jaxctc.prefix_beam_search(
        x, p, beam_width=5, top_paths=3, max_label_length=frames
    )
    init = jaxctc.prefix_beam_search_init(
        batch, classes, beam_width=5, max_label_length=frames
    )
    state = stream(init, jaxctc.prefix_beam_search_update, pieces)
    assert_same(jaxctc.prefix_beam_search_result(state, top_paths=3), want)
    assert int(state.frame) == x.shape[1]
    if len(sizes) == 1:  # trailing padded frames change nothing
        assert_same(want, jaxctc.prefix_beam_search(
            logits, paddings, beam_width=5, top_paths=3, max_label_length=frames
        ))  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        dict(token_top_k=4),
        dict(token_min_log_prob=-5.0),
        dict(blank_skip_log_prob=float(np.log(0.999))),
    ],
)
def test_pruning_options_over_chunks_equal_one_shot(options):
    logits, paddings = beam_case("model-like", 7)
    batch, frames, classes = logits.shape
    pieces, (x, p) = chunks(logits, paddings, (3, 8))
    want = jaxctc.prefix_beam_search(
        x, p, beam_width=4, top_paths=2, max_label_length=frames, **options
    )
    init = jaxctc.prefix_beam_search_init(
        batch, classes, beam_width=4, max_label_length=frames, **options
    )
    state = stream(init, jaxctc.prefix_beam_search_update, pieces)
    assert_same(jaxctc.prefix_beam_search_result(state, top_paths=2), want)


def scorers(tmp_path):
    path = tmp_path / "words.arpa"
    aref.write_random_arpa(path, 3, order=3, words=WORDS)
    return (
        NGramLM.from_arpa(path, LABELS, weight=0.8, word_bonus=0.5, unk_score=-3.0),
        Hotwords(["ab", "ba c"], LABELS, weight=1.5),
        Lexicon(WORDS[:5], LABELS),
    )


@pytest.mark.parametrize("sizes", [(1,), (7,), (4, 1, 9)])
def test_scorers_states_carry_across_chunks(tmp_path, sizes):
    fusion = scorers(tmp_path)
    logits, paddings = random_logits(5, batch=3, frames=24)
    paddings = paddings.astype(np.float32)
    pieces, (x, p) = chunks(logits, paddings, sizes)
    for chosen in (fusion[:1], fusion[1:2], fusion):
        want = jaxctc.prefix_beam_search(
            x, p, beam_width=4, top_paths=2, max_label_length=24, scorers=chosen
        )
        init = jaxctc.prefix_beam_search_init(
            3, len(LABELS), beam_width=4, max_label_length=24, scorers=chosen
        )
        state = stream(init, jaxctc.prefix_beam_search_update, pieces)
        assert_same(jaxctc.prefix_beam_search_result(state, top_paths=2), want)


def test_result_mid_stream_is_the_one_shot_result_so_far_and_pure(tmp_path):
    fusion = scorers(tmp_path)
    logits, paddings = random_logits(6, batch=3, frames=21)
    paddings = np.zeros_like(paddings, np.float32)
    state = jaxctc.prefix_beam_search_init(
        3, len(LABELS), beam_width=4, max_label_length=21, scorers=fusion
    )
    for stop in (7, 14, 21):
        state = jaxctc.prefix_beam_search_update(
            state, logits[:, stop - 7 : stop], paddings[:, stop - 7 : stop]
        )
        before = jax.tree.leaves(state)
        got = jaxctc.prefix_beam_search_result(state, top_paths=2)
        # The end terms (end of sentence, unfinished hotwords) are in `scores`
        # but not in the state.
        want = jaxctc.prefix_beam_search(
            logits[:, :stop], paddings[:, :stop], beam_width=4, top_paths=2,
            max_label_length=21, scorers=fusion,
        )  # fmt: skip
        assert_same(got, want)
        for a, b in zip(before, jax.tree.leaves(state), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("merge_repeated", [True, False])
@pytest.mark.parametrize("sizes", SIZES)
def test_greedy_over_chunks_equals_one_shot(merge_repeated, sizes):
    rng = np.random.default_rng(len(sizes))
    logits, paddings = ref.random_batch(rng, 5, 45, 4, scale=1.0)
    logits[:, 10:30, 2] += 4.0  # long runs, cut by the chunk edges
    pieces, (x, p) = chunks(logits, paddings.astype(np.float32), sizes)
    want = jaxctc.greedy_decode(x, p, merge_repeated=merge_repeated)
    init = jaxctc.greedy_decode_init(
        5, 4, merge_repeated=merge_repeated, max_label_length=x.shape[1]
    )
    state = stream(init, jaxctc.greedy_decode_update, pieces)
    assert_same(jaxctc.greedy_decode_result(state), want)


def test_greedy_keeps_the_first_tokens_and_counts_the_rest():
    rng = np.random.default_rng(0)
    logits, paddings = ref.random_batch(rng, 3, 30, 5, pad=False)
    want = jaxctc.greedy_decode(logits, paddings)
    lengths = np.sum(want.label_paddings == 0, axis=1)
    limit = int(lengths.min()) - 2
    init = jaxctc.greedy_decode_init(3, 5, max_label_length=limit)
    state = stream(init, jaxctc.greedy_decode_update, chunks(logits, paddings, (5,))[0])
    got = jaxctc.greedy_decode_result(state)
    np.testing.assert_array_equal(state.num_labels, lengths)
    for field in EXACT:
        np.testing.assert_array_equal(
            getattr(got, field), getattr(want, field)[:, :limit]
        )


def test_beam_search_limited_by_max_label_length_says_so():
    logits, paddings = beam_case("random", 1, frames=30)
    want = jaxctc.prefix_beam_search(logits, paddings, beam_width=4, max_label_length=3)
    init = jaxctc.prefix_beam_search_init(4, 6, beam_width=4, max_label_length=3)
    pieces, _ = chunks(logits, paddings, (5,))
    state = stream(init, jaxctc.prefix_beam_search_update, pieces)
    assert_same(jaxctc.prefix_beam_search_result(state), want)
    # A sequence with a kept prefix of 3 tokens is flagged.
    longest = np.max(np.asarray(state.beams.length), axis=1)
    assert np.any(longest >= 3) and np.all(state.limited[longest >= 3])


def test_update_jits_once_and_the_state_keeps_its_size():
    logits, paddings = beam_case("random", 2, frames=40)
    init = jaxctc.prefix_beam_search_init(4, 6, beam_width=3, max_label_length=40)

    # Traces counted by the function itself: jit traces (and compiles) once
    # per new signature, and a call that hits its cache runs no Python.
    traces = []

    def step(state, x, p):
        traces.append(1)
        return jaxctc.prefix_beam_search_update(state, x, p)

    update = jax.jit(step)
    state, counts = init, []
    for x, p in chunks(logits, paddings, (8,))[0]:
        state = update(state, x, p)
        counts.append(len(traces))
    assert counts == [1] * len(counts)  # the first update from init included
    assert jax.tree.structure(state) == jax.tree.structure(init)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(init), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    want = jaxctc.prefix_beam_search(logits, paddings, beam_width=3)
    assert_same(jaxctc.prefix_beam_search_result(state), want)


def test_update_under_vmap_equals_one_by_one():
    logits, paddings = beam_case("random", 4, frames=12)
    stack_x = np.stack([logits, logits[::-1]])
    stack_p = np.stack([paddings, paddings[::-1]])
    init = jaxctc.prefix_beam_search_init(4, 6, beam_width=3, max_label_length=12)
    states = jax.tree.map(lambda a: jnp.stack([a, a]), init)
    update = jax.vmap(jaxctc.prefix_beam_search_update)
    for t in range(0, 12, 4):
        states = update(states, stack_x[:, :, t : t + 4], stack_p[:, :, t : t + 4])
    got = jax.vmap(jaxctc.prefix_beam_search_result)(states)
    for i in range(2):
        want = jaxctc.prefix_beam_search(stack_x[i], stack_p[i], beam_width=3)
        assert_same(jax.tree.map(lambda a, i=i: a[i], got), want)


def test_empty_chunks_batches_and_states():
    init = jaxctc.prefix_beam_search_init(2, 5, beam_width=3, max_label_length=4)
    state = jaxctc.prefix_beam_search_update(
        init, np.zeros((2, 0, 5), np.float32), np.zeros((2, 0), np.float32)
    )
    hyp = jaxctc.prefix_beam_search_result(state, top_paths=2)
    np.testing.assert_array_equal(hyp.log_probs, [[0.0, -np.inf]] * 2)
    assert np.all(hyp.label_paddings == 1)
    greedy = jaxctc.greedy_decode_result(
        jaxctc.greedy_decode_init(0, 5, max_label_length=4)
    )
    assert greedy.labels.shape == (0, 4)
    empty = jaxctc.prefix_beam_search_init(0, 5, max_label_length=4)
    hyp = jaxctc.prefix_beam_search_result(
        jaxctc.prefix_beam_search_update(
            empty, np.zeros((0, 3, 5), np.float32), np.zeros((0, 3), np.float32)
        )
    )
    assert hyp.labels.shape == (0, 1, 4)
    # No room for a token: the empty labelling, flagged as limited.
    logits, paddings = beam_case("random", 3, frames=6)
    state = jaxctc.prefix_beam_search_update(
        jaxctc.prefix_beam_search_init(4, 6, beam_width=3, max_label_length=0),
        logits,
        paddings,
    )
    hyp = jaxctc.prefix_beam_search_result(state)
    want = jaxctc.prefix_beam_search(logits, paddings, beam_width=3, max_label_length=0)
    assert hyp.labels.shape == (4, 1, 0) and np.all(state.limited)
    np.testing.assert_allclose(hyp.log_probs, want.log_probs, rtol=1e-6)


def test_bad_input_names_the_argument():
    beam = jaxctc.prefix_beam_search_init(2, 5, beam_width=3, max_label_length=4)
    greedy = jaxctc.greedy_decode_init(2, 5, max_label_length=4)
    x, p = np.zeros((2, 3, 5), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"`logits` must have B = 2 and K = 5"):
        jaxctc.prefix_beam_search_update(
            beam, np.zeros((3, 3, 5), np.float32), np.zeros((3, 3), np.float32)
        )
    with pytest.raises(ValueError, match=r"`logits` must have B = 2 and K = 5"):
        jaxctc.prefix_beam_search_update(beam, np.zeros((2, 3, 6), np.float32), p)
    with pytest.raises(ValueError, match=r"`logits` must have B = 2 and K = 5"):
        jaxctc.greedy_decode_update(greedy, np.zeros((2, 3, 4), np.float32), p)
    with pytest.raises(ValueError, match="`logit_paddings`"):
        jaxctc.prefix_beam_search_update(beam, x, p[:, :2])
    with pytest.raises(TypeError, match=r"`state` must be a PrefixBeamSearchState"):
        jaxctc.prefix_beam_search_update(greedy, x, p)
    with pytest.raises(TypeError, match=r"`state` must be a GreedyDecodeState"):
        jaxctc.greedy_decode_result(beam)
    with pytest.raises(ValueError, match="`top_paths` must be <= `beam_width`"):
        jaxctc.prefix_beam_search_result(beam, top_paths=4)
    with pytest.raises(ValueError, match="NaN"):
        jaxctc.greedy_decode_update(greedy, np.full((2, 3, 5), np.nan, np.float32), p)
    with pytest.raises(ValueError, match="`blank_id`"):
        jaxctc.prefix_beam_search_init(2, 5, blank_id=5, max_label_length=4)
    with pytest.raises(ValueError, match="`max_label_length`"):
        jaxctc.greedy_decode_init(2, 5, max_label_length=-1)
    with pytest.raises(TypeError, match="max_label_length"):
        jaxctc.prefix_beam_search_init(2, 5)  # required: it sets the state's size


def test_bf16_and_float64_chunks_into_a_float32_state():
    logits, paddings = beam_case("random", 8, frames=12)
    init = jaxctc.prefix_beam_search_init(
        4, 6, beam_width=3, max_label_length=12, dtype=jnp.float32
    )
    for dtype in (jnp.bfloat16, jnp.float64):
        x = jnp.asarray(logits, dtype)
        pieces = [(x[:, t : t + 4], paddings[:, t : t + 4]) for t in (0, 4, 8)]
        state = stream(init, jaxctc.prefix_beam_search_update, pieces)
        got = jaxctc.prefix_beam_search_result(state)
        assert got.log_probs.dtype == jnp.float32
        want = jaxctc.prefix_beam_search(x.astype(jnp.float32), paddings, beam_width=3)
        assert_same(got, want)


@pytest.mark.parametrize("mode", ["Auto", "Explicit"])
def test_batch_sharded_stream_over_8_devices(mode):
    # A state made on one device takes the chunks' batch sharding; the update
    # needs no collective.
    script = f"""
import json, re
import jax, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import jaxctc
from tests import references as ref

logits, paddings = ref.random_batch(np.random.default_rng(0), 16, 12, 7)
logits, paddings = logits.astype(np.float32), paddings.astype(np.float32)
mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.{mode},))
shard = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
ops = r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)"
report = dict(collectives=[])
for name, init, update, result, one_shot in [
    ("beam",
     jaxctc.prefix_beam_search_init(16, 7, beam_width=4, max_label_length=12),
     jaxctc.prefix_beam_search_update,
     lambda s: jaxctc.prefix_beam_search_result(s, top_paths=2),
     lambda x, p: jaxctc.prefix_beam_search(x, p, beam_width=4, top_paths=2)),
    ("greedy", jaxctc.greedy_decode_init(16, 7, max_label_length=12),
     jaxctc.greedy_decode_update, jaxctc.greedy_decode_result,
     jaxctc.greedy_decode),
]:
    update, state = jax.jit(update), init
    for t in range(0, 12, 4):
        x, p = shard(logits[:, t : t + 4]), shard(paddings[:, t : t + 4])
        hlo = update.lower(state, x, p).compile().as_text()
        report["collectives"] += re.findall(r"\\b" + ops + r"(?:-start)?\\(", hlo)
        state = update(state, x, p)
    got, want = result(state), one_shot(logits, paddings)
    report[name] = dict(
        equal=all(np.array_equal(g, w) for g, w in zip(got[:2], want[:2])),
        close=bool(np.allclose(got.log_probs, want.log_probs, atol=1e-5)),
        spec=str(state.labels.sharding.spec),
    )
print(json.dumps(report))
"""
    report = run_on_8_devices(script)
    assert report["collectives"] == []
    for name in ("beam", "greedy"):
        assert report[name]["equal"] and report[name]["close"], name
        assert "batch" in report[name]["spec"], name
