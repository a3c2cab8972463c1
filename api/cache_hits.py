"""Answering a job from the cache (``shared.cache``), before any budget is touched.

The cache is asked after the request is screened, redacted, counted and routed (``Gateway.envelope``):
its key is the request as the provider would see it, and what it keeps is the provider's answer as
the provider gave it. A hit's tokenized values are put back from *this* request's vault, so a caller
only ever sees its own values, never those of the call that filled the entry.

A hit's job row is written finished (cost 0, what it saved, whose answer it is), with its audit record
in the same transaction. The caller is answered first and the row written right after
(``HIT_ANSWER_FIRST``): the insert is most of a hit's work, and a GET of the job a moment later finds
it. With an idempotency key the row comes first: it may be another job's repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from api.auth import Caller
from shared.cache.plan import CachePlan
from shared.cache.store import Hit
from shared.db import audit, jobs
from shared.db.models import utcnow
from shared.db.session import session_scope
from shared.envelope import Envelope
from shared.privacy.policy import audit_policy
from shared.privacy.vault import Vault
from shared.schemas import JobTags

if TYPE_CHECKING:
    from api.accept import Submitted
    from api.gateway import Gateway

HIT_ANSWER_FIRST = True


class CacheHits:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def serve(self, caller: Caller, plan: CachePlan, tags: JobTags, env: Envelope,
              answer: Callable[[Submitted], None] | None) -> tuple[Submitted | None, str | None]:
        """The job answered from the cache; None on a miss (or a cache that cannot answer), with the
        question's embedding when the lookup made one (its answer is stored with it)."""
        from api.accept import Submitted

        lookup = self.gw.attempts.cache.lookup(plan, epoch_key=self.gw.auth.epoch_key if caller.epoch is None
                                               else None)
        if lookup.hit is None:
            return None, lookup.vector
        if caller.epoch is None:  # a key from the cache: confirmed before anything is served to it
            if lookup.epoch is None:
                self.gw.auth.check(caller.api_key, "")
            else:
                self.gw.auth.saw_epoch(lookup.epoch)
                self.gw.auth.confirm(caller.api_key, lookup.epoch)
        row, now = self._row(caller, tags, env), utcnow()
        answered = _answered(lookup.hit, env.vault)
        if answer is not None and tags.idempotency_key is None and HIT_ANSWER_FIRST:
            view = jobs.answered_view(caller.tenant, row, answered, now)
            answer(Submitted(view, created=True, screening=env.job.screening))
            self._persist(caller, env, row, answered, lookup.hit, now)
            return Submitted(view, created=True, screening=env.job.screening), None
        view, created = self._persist(caller, env, row, answered, lookup.hit, now)
        return Submitted(view, created=created, screening=env.job.screening), None

    def _row(self, caller: Caller, tags: JobTags, env: Envelope) -> jobs.NewJob:
        return jobs.NewJob(env.id, env.feature, env.lane, tags.task, env.model, env.request,
                           tags.deadline_at(self.gw.settings.lanes[env.lane].deadline_s), tags.idempotency_key,
                           0, caller.key_id, env.job.screening, cache_status="hit", dialect=env.job.dialect)

    def _persist(self, caller: Caller, env: Envelope, row: jobs.NewJob, answered: dict[str, Any], hit: Hit,
                 now: datetime) -> tuple[dict[str, Any], bool]:
        with session_scope(self.gw.engine) as db:
            view, created = jobs.create_job_view(
                db, tenant_id=caller.tenant, feature=row.feature, lane=row.lane, task=row.task, model=row.model,
                request=row.request, deadline=row.deadline, idempotency_key=row.idempotency_key,
                estimate_tokens=0, job_id=row.job_id, key_id=row.key_id, screening=row.screening,
                cache_status=answered["cache_status"], answered=answered, now=now, dialect=row.dialect)
            if created:
                self._audit(db, caller, env, answered, hit)
            return view, created

    def _audit(self, db: Session, caller: Caller, env: Envelope, answered: dict[str, Any], hit: Hit) -> None:
        """A hit is a call like any other in the audit log: its decision says whose answer it was."""
        policy = audit_policy(self.gw.settings, caller.tenant)
        screening = env.job.screening if isinstance(env.job.screening, dict) else {}
        vault = env.vault or Vault()
        audit.append(
            db, tenant_id=caller.tenant, kind="call", action="call.succeeded", actor=f"key:{caller.key_id}",
            key_id=caller.key_id, job_id=env.id, feature=env.feature, lane=env.lane, model=env.model,
            model_used=answered.get("model_used"), deployment=answered.get("deployment"),
            decision={"cache": hit.kind, "source_job": hit.source_job or None, "similarity": hit.similarity,
                      "attempts": 0, "outcome": "succeeded"},
            redactions=screening.get("redactions") or None, screen=screening.get("screen"),
            tokens_in=0, tokens_out=0, cost_usd=0.0,
            **audit.contents(policy, sent=env.request, received=hit.answer.get("result"),
                             caller_got=answered["result"],
                             caller_sent=vault.restore_request(env.request) if policy.content == "full" else None))


def _answered(hit: Hit, vault: Vault | None) -> dict[str, Any]:
    """What a hit's job row says: succeeded at no cost, what it saved, whose answer it is; the answer
    with this caller's tokenized values put back."""
    answer = hit.answer
    result = answer.get("result")
    return {"status": "succeeded", "result": vault.restore_body(result) if vault and result else result,
            "model_used": answer.get("model_used"), "deployment": answer.get("deployment"),
            "cache_status": hit.kind, "cache_source_job": hit.source_job or None,
            "cache_similarity": hit.similarity, "saved_usd": hit.saved_usd}
