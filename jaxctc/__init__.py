"""jaxctc: Connectionist Temporal Classification for JAX.

The public API; every module whose name starts with ``_`` is private.
"""

from jaxctc._align import Alignment, forced_align, posteriors
from jaxctc._beam import prefix_beam_search
from jaxctc._beam_streaming import (
    PrefixBeamSearchState,
    prefix_beam_search_init,
    prefix_beam_search_result,
    prefix_beam_search_update,
)
from jaxctc._greedy import (
    GreedyDecodeState,
    greedy_decode,
    greedy_decode_init,
    greedy_decode_result,
    greedy_decode_update,
)
from jaxctc._hotwords import Hotwords
from jaxctc._hypotheses import Hypotheses
from jaxctc._lexicon import Lexicon
from jaxctc._lm import NGramLM
from jaxctc._loss import (
    ctc_loss,
    ctc_loss_with_forward_probs,
    feasible,
    sequence_log_probs,
)
from jaxctc._metrics import char_error_rate, edit_distance, word_error_rate
from jaxctc._prefix_search import prefix_search

__version__ = "0.1.0"

__all__ = [
    "Alignment",
    "GreedyDecodeState",
    "Hotwords",
    "Hypotheses",
    "Lexicon",
    "NGramLM",
    "PrefixBeamSearchState",
    "char_error_rate",
    "ctc_loss",
    "ctc_loss_with_forward_probs",
    "edit_distance",
    "feasible",
    "forced_align",
    "greedy_decode",
    "greedy_decode_init",
    "greedy_decode_result",
    "greedy_decode_update",
    "posteriors",
    "prefix_beam_search",
    "prefix_beam_search_init",
    "prefix_beam_search_result",
    "prefix_beam_search_update",
    "prefix_search",
    "sequence_log_probs",
    "word_error_rate",
]
