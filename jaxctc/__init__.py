"""jaxctc: Connectionist Temporal Classification for JAX.

The public API; every module whose name starts with ``_`` is private.
"""

from jaxctc._align import Alignment, forced_align, posteriors
from jaxctc._loss import ctc_loss, ctc_loss_with_forward_probs, feasible

__version__ = "0.1.0"

__all__ = [
    "Alignment",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "feasible",
    "forced_align",
    "posteriors",
]
