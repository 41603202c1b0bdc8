"""optax's own CTC tests, pointed at jaxctc.

``optax.losses._classification_test.CTCTest`` calls the loss through the
module ``optax.losses._classification``; the fixture below swaps jaxctc's
functions into that module for the duration of each test.
"""

import pytest

import jaxctc

_classification = pytest.importorskip("optax.losses._classification")
_optax_tests = pytest.importorskip("optax.losses._classification_test")


@pytest.fixture(autouse=True)
def _use_jaxctc(monkeypatch):
    monkeypatch.setattr(_classification, "ctc_loss", jaxctc.ctc_loss)
    monkeypatch.setattr(
        _classification,
        "ctc_loss_with_forward_probs",
        jaxctc.ctc_loss_with_forward_probs,
    )


class TestOptaxCTC(_optax_tests.CTCTest):
    """Every test method of optax's CTCTest, run against jaxctc."""


def test_the_suite_is_patched():
    assert _classification.ctc_loss is jaxctc.ctc_loss
