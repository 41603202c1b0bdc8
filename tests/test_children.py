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


@pytest.mark.parametrize("tree", [True, False])
def test_tables_of_edges_equal_a_dict_of_them(tree):
    # A trie over classes with nodes no edge reaches (the mask layout, the
    # nodes renumbered), or a map that reaches nodes by several edges (BPE
    # walks: the hashed layout).
    rng = np.random.default_rng(int(tree))
    num_nodes, num_classes = 40, 9
    edges = {}
    for child in range(1, 30):  # nodes 30.. have no edges
        while True:
            pair = (int(rng.integers(0, child)), int(rng.integers(0, num_classes)))
            if edges.setdefault(pair, child) == child:
                break
    if not tree:
        for _ in range(30):
            pair = (int(rng.integers(0, 30)), int(rng.integers(0, num_classes)))
            edges.setdefault(pair, int(rng.integers(1, num_nodes)))
    parent, token = np.array([k[0] for k in edges]), np.array([k[1] for k in edges])
    child = np.array(list(edges.values()))
    trie, new = _children.from_edges(parent, token, child, num_nodes, num_classes)
    assert (trie.mask is not None) == tree
    assert sorted(new) == list(range(num_nodes))
    nodes = np.repeat(np.arange(num_nodes), num_classes)
    classes = np.tile(np.arange(num_classes), num_nodes)
    found, got = trie.child(new[nodes].astype(np.int32), classes.astype(np.int32))
    want = [edges.get((n, k), -1) for n, k in zip(nodes, classes, strict=True)]
    want = np.array([new[w] if w >= 0 else -1 for w in want])
    np.testing.assert_array_equal(np.asarray(found), want >= 0)
    np.testing.assert_array_equal(np.asarray(got), want)
