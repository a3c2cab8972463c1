"""The audit log in the store, on SQLite and PostgreSQL: records chain per tenant when sealed, any later
change to a record (a field, its content, its removal) breaks its chain, and retention purges content
without breaking it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from shared.config import AuditPolicy
from shared.db import audit
from shared.db.models import AuditEvent, utcnow
from tests.store.conftest import Scope


def _call(scope: Scope, tenant: str, n: int, policy: AuditPolicy | None = None) -> None:
    with scope() as db:
        for i in range(n):
            request = {"messages": [{"role": "user", "content": f"[EMAIL_1] number {i}"}]}
            answer = {"choices": [{"message": {"role": "assistant", "content": f"reply {i}"}}]}
            audit.append(db, tenant_id=tenant, kind="call", action="call.succeeded", key_id=1, feature="chat",
                         tokens_in=10 + i, tokens_out=5, cost_usd=0.0001 * i, redactions={"email": 1},
                         **audit.contents(policy or AuditPolicy(content="redacted"), sent=request, received=answer,
                                          caller_got=answer))


def test_sealed_records_form_one_chain_per_tenant(scope: Scope, engine) -> None:
    _call(scope, "acme", 3)
    _call(scope, "globex", 2)
    assert audit.verify(engine).unsealed == 5
    assert audit.seal(engine) == 5
    _call(scope, "acme", 1)
    assert audit.seal(engine) == 1
    found = audit.verify(engine)
    assert found.ok, found.problems
    assert found.records == {"acme": 4, "globex": 2} and found.unsealed == 0
    with scope(readonly=True) as db:
        rows = db.execute(select(AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash)
                          .where(AuditEvent.tenant_id == "acme").order_by(AuditEvent.seq)).all()
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


def test_a_changed_field_a_changed_content_and_a_removed_record_are_found(scope: Scope, engine) -> None:
    _call(scope, "acme", 4)
    audit.seal(engine)
    with scope() as db:
        db.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(cost_usd=0))
        db.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(response={"choices": []}))
        db.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    problems = audit.verify(engine, "acme").problems
    assert any("record 2" in p and "changed after it was sealed" in p for p in problems), problems
    assert any("record 3" in p and "response content was changed" in p for p in problems), problems
    _call(scope, "acme", 1)  # sealed after the removal: its chain goes on from record 3, so 4 is not missing
    audit.seal(engine)
    with scope() as db:
        db.execute(delete(AuditEvent).where(AuditEvent.seq == 1))
    assert any("records are missing" in p for p in audit.verify(engine, "acme").problems)


def test_retention_purges_content_and_the_chain_still_verifies(scope: Scope, engine) -> None:
    _call(scope, "acme", 3, AuditPolicy(content="full", content_days=1))
    _call(scope, "acme", 1, AuditPolicy(content="hash"))
    audit.seal(engine)
    assert audit.purge_content(engine, now=utcnow()) == 0  # not due yet
    assert audit.purge_content(engine, now=utcnow() + timedelta(days=1, minutes=1)) == 3
    with scope(readonly=True) as db:
        rows = db.execute(select(AuditEvent.request, AuditEvent.response, AuditEvent.request_sha256)).all()
    assert all(r.request is None and r.response is None and r.request_sha256 for r in rows)
    assert audit.verify(engine).ok


def test_a_hash_only_record_keeps_no_content(scope: Scope) -> None:
    _call(scope, "acme", 1, AuditPolicy(content="hash"))
    with scope(readonly=True) as db:
        [record] = audit.query(db, tenant="acme")
    assert record["request"] is None and record["response"] is None and record["content_until"] is None
    assert record["request_sha256"] == audit.content_hash(
        {"messages": [{"role": "user", "content": "[EMAIL_1] number 0"}]})


def test_a_query_sees_only_the_tenant_it_names(scope: Scope) -> None:
    _call(scope, "acme", 2)
    _call(scope, "globex", 3)
    with scope(readonly=True) as db:
        assert {r["tenant_id"] for r in audit.query(db, tenant="globex")} == {"globex"}
        assert len(audit.query(db, tenant="globex", after_id=0, limit=2)) == 2
        assert len(audit.query(db, tenant=None)) == 5
