"""Test configuration: strict promotion and float64 for the references."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


# Scripts that regenerate stored test data need the peers (TensorFlow):
# they are run by hand, never collected.
collect_ignore = ["tests/data/make_tf_vectors.py"]
