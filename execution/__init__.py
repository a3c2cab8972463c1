"""Running one attempt of a job: call the provider, record the outcome, settle the budget.

Both kinds of process that send attempts use this package as equals: a Celery worker runs the
attempts the scheduler dispatched (``run_dispatched``), and the api runs a fast-lane job's first
attempt on the caller's own request (``run_inline``). Neither owns it.

    context.py       the per-process helpers an attempt needs (Redis clients, breakers, budgets), built once
    attempt.py       the attempt: claim, call, record, then its end steps in one round trip
    settle.py        the budget's truth after a call: settle the reservation, sync to provider headers
    group_commit.py  the attempts a process ends together are recorded in one transaction
    providers/       the wire: OpenAI and Anthropic adapters over one pooled httpx client
"""
