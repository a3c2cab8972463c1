"""Circuit breakers per deployment, shared in Redis by every process (see ``breakers.py``).

    breakers = Breakers.from_settings(client, keys, settings)
    permit = breakers.allow("gpt-4o-mini@sim")          # scheduler, at admission
    if not permit.allowed: ...                          # skip to the fallback; retry_in_s says when
    ...                                                 # carry permit.ticket with the attempt
    breakers.record("gpt-4o-mini@sim", ok=False, kind="server", latency_s=1.2, ticket=ticket)  # worker
    breakers.states()                                   # admin endpoint
"""

from shared.breaker.breakers import CLIENT_ERROR_KINDS, TRANSITIONS, Breakers, Permit, Recorded, Transition, verdict

__all__ = ["CLIENT_ERROR_KINDS", "TRANSITIONS", "Breakers", "Permit", "Recorded", "Transition", "verdict"]
