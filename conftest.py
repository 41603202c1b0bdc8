"""Test configuration: strict promotion and float64 for the references, and
the hypothesis profiles of the property tests."""

import os

# The suite's time is mostly XLA compiling many small programs, 40% of it in
# LLVM's optimizations: the tests compile without them (measured: 132 -> 81 s
# on compile-bound tests, 43 -> 24 s for the example's training run). They
# check results, not speed; HLO passes (fusion) still run, and float
# semantics are the same. JAXCTC_TEST_XLA_OPT=default compiles as users do.
# Subprocesses the tests start (tests/devices.py) inherit the flags.
if os.environ.get("JAXCTC_TEST_XLA_OPT", "0") != "default":
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# "ci" (the default): a few hundred examples per property, the same ones on
# every run (derandomized: CI is not flaky), no example database written into
# the tree. "thorough": ten times more, fresh examples each run, e.g.
# HYPOTHESIS_PROFILE=thorough pytest tests/test_properties.py
_PROPERTY_SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", max_examples=200, derandomize=True, **_PROPERTY_SETTINGS
)
settings.register_profile("thorough", max_examples=2000, **_PROPERTY_SETTINGS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


# Scripts that regenerate stored test data need the peers (TensorFlow):
# they are run by hand, never collected.
collect_ignore = ["tests/data/make_tf_vectors.py"]
