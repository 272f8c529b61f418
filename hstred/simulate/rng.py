"""Deterministic, independent random streams derived from the program seed.

Every random quantity of a simulation is drawn from a stream named by labels
(e.g. ``("noise", "jd7101a0q", 2)``), so adding a visit or a filter never
changes what the other exposures contain, and the same seed always gives
bit-identical files.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["rng_for", "label_digest"]


def label_digest(*labels: object) -> bytes:
    """SHA-256 digest of the labels' text, separated unambiguously."""
    text = "\x1f".join(str(label) for label in labels)
    return hashlib.sha256(text.encode("utf-8")).digest()


def rng_for(seed: int, *labels: object) -> np.random.Generator:
    """A numpy Generator seeded by ``seed`` and the labels."""
    words = np.frombuffer(label_digest(*labels), dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))
