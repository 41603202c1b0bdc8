"""Smoke test of an installed jaxctc (run from outside the checkout): the
metadata agrees with the package, the license ships, and the public API
computes a number a reader can check by hand."""

import importlib.metadata
import math

import jax.numpy as jnp

import jaxctc

dist = importlib.metadata.distribution("jaxctc")
assert dist.version == jaxctc.__version__, (dist.version, jaxctc.__version__)
assert "site-packages" in jaxctc.__file__, jaxctc.__file__  # not the checkout
assert dist.metadata["License-Expression"] == "Apache-2.0"
assert any(str(f).endswith("LICENSE") for f in dist.files or ()), "no LICENSE"
requires = sorted(
    r.split(";")[0].strip() for r in dist.requires or () if "extra" not in r
)
print(f"jaxctc {dist.version}: requires {requires}")

# Two uniform frames over blank and `a`: three of the four alignments spell [a].
x, p = jnp.zeros((1, 2, 2)), jnp.zeros((1, 2))
y, q = jnp.array([[1]]), jnp.zeros((1, 1))
assert math.isclose(
    float(jaxctc.ctc_loss(x, p, y, q)[0]), -math.log(0.75), rel_tol=1e-6
)
hyp = jaxctc.prefix_beam_search(jnp.log(jnp.array([[[0.6, 0.4], [0.6, 0.4]]])), p)
assert hyp.labels[0, 0, :1].tolist() == [1]  # P([a]) = 0.64 beats P([]) = 0.36
print("smoke test passed")
