"""jaxctc: Connectionist Temporal Classification for JAX.

The public API; every module whose name starts with ``_`` is private.
"""

from jaxctc._loss import ctc_loss, ctc_loss_with_forward_probs, feasible
from jaxctc._metrics import char_error_rate, edit_distance, word_error_rate

__version__ = "0.1.0"

__all__ = [
    "char_error_rate",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "edit_distance",
    "feasible",
    "word_error_rate",
]
