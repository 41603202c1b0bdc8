"""jaxctc: Connectionist Temporal Classification for JAX.

The public API; every module whose name starts with ``_`` is private.
"""

from jaxctc._loss import ctc_loss, ctc_loss_with_forward_probs, feasible

__version__ = "0.1.0"

__all__ = [
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "feasible",
]
