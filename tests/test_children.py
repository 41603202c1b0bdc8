"""The trie's child tables against a dict of the same edges."""

import numpy as np
import pytest

from jaxctc import _children


@pytest.mark.parametrize("num_classes", [3, 29, 33, 64, 65, 300])
def test_child_lookups_equal_a_dict_of_the_edges(num_classes):
    rng = np.random.default_rng(num_classes)
    spellings = [
        list(rng.integers(0, num_classes, rng.integers(0, 6))) for _ in range(300)
    ]
    trie, ends = _children.build(spellings, num_classes)
    assert (trie.mask is None) == (num_classes > 64)
    # Walk every spelling through the tables, one class at a time (all at
    # once), and check one node per prefix: a trie's edges are its spellings'
    # prefixes.
    longest = max(map(len, spellings))
    padded = np.array([s + [0] * (longest - len(s)) for s in spellings], np.int32)
    node = np.zeros(len(spellings), np.int32)
    prefixes = {(): 0}
    for i in range(longest):
        found, child = trie.child(node, padded[:, i])
        live = np.array([len(s) > i for s in spellings])
        assert np.all(np.asarray(found)[live])
        node = np.where(live, np.asarray(child), node)
        for spelling, n in zip(spellings, node, strict=True):
            if len(spelling) > i:
                assert prefixes.setdefault(tuple(spelling[: i + 1]), n) == n
    np.testing.assert_array_equal(node, ends)
    assert len(set(prefixes.values())) == len(prefixes) == trie.num_nodes
    # Every (node, class) pair that is no edge is missed.
    edges = {(prefixes[p[:-1]], p[-1]) for p in prefixes if p}
    nodes = np.repeat(np.arange(trie.num_nodes), num_classes)
    classes = np.tile(np.arange(num_classes), trie.num_nodes)
    found, child = trie.child(nodes, classes)
    want = np.array([(n, k) in edges for n, k in zip(nodes, classes, strict=True)])
    np.testing.assert_array_equal(np.asarray(found), want)
    assert np.all(np.asarray(child)[~want] == -1)


def test_empty_trie_is_the_root_alone():
    trie, ends = _children.build([[], []], 29)
    assert trie.num_nodes == 1 and list(ends) == [0, 0]
    found, child = trie.child(np.zeros(3, np.int32), np.arange(3, dtype=np.int32))
    assert not np.any(np.asarray(found)) and np.all(np.asarray(child) == -1)
