"""The response cache in front of admission: exact repeats for every tenant, semantic matches per feature.

    plan.py       what the cache may do with one request (read, store, both, or bypass), decided once
    canonical.py  the canonical form of a request and its digests (exact entry, semantic scope)
    store.py      ResponseCache: lookup (api), fill (the end of a successful attempt), purge (operators)
    semantic.py   where semantic entries live (Redis) and each process's searchable copy of them
    embedder.py   the local embedding model, behind an interface
    guard.py      the near-miss guard: numbers, negations, unmatched words, swapped directions
"""
