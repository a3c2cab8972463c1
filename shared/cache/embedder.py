"""The local embedding model behind the semantic cache, behind an interface so it can be swapped.

The default is ``tokenlearn-static-model``: a Model2Vec-style static model (a 10k x 64 int8 table, a
Unigram tokenizer) whose weights ship inside its PyPI wheel (7 MB, no dependencies) and load offline,
embedding a question in ~0.1 ms on this machine. Candidates that were tried and why they are not it
are in README.md ("Cache"). A static model is coarse: near misses score as high as paraphrases with
any embedding, so precision comes from ``shared.cache.guard``, not from the model.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str
    dimensions: int

    def embed(self, text: str) -> np.ndarray:
        """``text`` as a unit vector (float32)."""
        ...


class StaticEmbedder:
    """``tokenlearn-static-model``'s packaged model (see the module docstring); loaded on first use."""

    name = "tokenlearn-static-model-10k-64d"
    dimensions = 64

    def __init__(self) -> None:
        self._loading = threading.Lock()
        self._ready = False

    def embed(self, text: str) -> np.ndarray:
        from static_model import get_embeddings  # its Rust extension loads the packaged files once

        if not self._ready:  # the first call loads the model; callers meanwhile wait rather than load it too
            with self._loading:
                if not self._ready:
                    get_embeddings("")
                    self._ready = True
        vector = np.asarray(get_embeddings(text), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector


_DEFAULT: Embedder | None = None
_LOCK = threading.Lock()


def default_embedder() -> Embedder:
    """The process's embedder, made once (processes that never embed never load a model)."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            _DEFAULT = StaticEmbedder()
        return _DEFAULT
