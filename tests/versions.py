"""The installed jax's version, for the few tests of behaviour that changed
between the lowest jax that jaxctc supports (pyproject.toml) and the newest."""

from __future__ import annotations

import jax


def jax_at_least(version: str) -> bool:
    """Whether the installed jax is ``version`` (e.g. ``"0.10.1"``) or newer."""
    have = tuple(int(p) for p in jax.__version__.split(".")[:3] if p.isdigit())
    return have >= tuple(int(p) for p in version.split("."))
