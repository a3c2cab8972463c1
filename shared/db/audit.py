"""The audit log: one append-only record per call and per admin action, hash-chained per tenant.

Writers append a row in the transaction that does what it records (``append``): a finished call in
the attempt's own transaction (``execution.attempt``), a refused one in its own, an admin action
with the change it makes (``cli.admin``). Appending is one INSERT and takes no lock, so no call waits
on another tenant's, or its own, chain.

Chaining is done after, by the leading scheduler (``seal``, every sweep, seconds behind): it numbers
each tenant's new records (``seq``) and sets ``hash = sha256(prev_hash + canonical record)``, where the
record is every field but the content itself, whose SHA-256 is in the record. So a changed, removed
or inserted record breaks its tenant's chain (``verify``, ``gateway audit verify``), and retention can
purge content (``purge_content``) without breaking it. A record is open to undetected change only in
the seconds before it is sealed.

Content per the tenant's ``AuditPolicy``: ``hash`` keeps the two SHA-256s, ``redacted`` the request and
answer as the provider saw them, ``full`` as the caller sent and got them (masked values never).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import orjson
from sqlalchemy import CursorResult, Engine, Table, bindparam, insert, null, or_, select, update
from sqlalchemy.orm import Session

from shared.config import AuditPolicy
from shared.db.models import AuditEvent, utcnow
from shared.db.prepared import Prepared
from shared.db.session import session_scope

log = logging.getLogger("gateway.audit")

_AUDIT = cast(Table, AuditEvent.__table__)
GENESIS = "0" * 64  # the prev_hash of a tenant's first record
BATCH_ROWS = 1000
# What the chain covers: everything but the id (a store detail), the content (its hashes stand for it)
# and the hash itself.
CHAINED = tuple(c.name for c in _AUDIT.c if c.name not in ("id", "request", "response", "hash"))
PUBLIC = tuple(c.name for c in _AUDIT.c)


def canonical(value: Any) -> bytes:
    """The one byte form a JSON value is hashed in (sorted keys, no spaces)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NAIVE_UTC)


def content_hash(value: Any) -> str | None:
    return None if value is None else hashlib.sha256(canonical(value)).hexdigest()


def append(session: Session, **fields: Any) -> None:
    """Append one record in ``session``'s transaction (``AuditEvent``'s columns; ``at`` defaults to now).
    For anyone who records an action: the caller's transaction commits it with what it records."""
    # None is left out rather than bound: a JSON column would store JSON null, not SQL NULL.
    record = {"at": utcnow(), **{k: v for k, v in fields.items() if v is not None}}
    _insert_of(tuple(sorted(record))).run(session, **{f"v_{k}": v for k, v in record.items()})


@lru_cache(maxsize=64)
def _insert_of(columns: tuple[str, ...]) -> Prepared:
    """The INSERT of a record with these columns, compiled once (``shared.db.prepared``): a kind of
    record (a finished call, a refusal, an admin action) always fills the same ones."""
    return Prepared(lambda: insert(_AUDIT).values({name: bindparam(f"v_{name}") for name in columns}))


def contents(policy: AuditPolicy, *, sent: Any, received: Any, caller_sent: Any = None,
             caller_got: Any = None, now: datetime | None = None) -> dict[str, Any]:
    """The content fields of a call's record under ``policy``: always the SHA-256 of what the provider
    was sent and answered; the content itself as the policy says, kept for ``content_days``."""
    fields: dict[str, Any] = {"content_mode": policy.content, "request_sha256": content_hash(sent),
                              "response_sha256": content_hash(received)}
    if policy.content == "hash":
        return fields
    request, response = (sent, received) if policy.content == "redacted" else (caller_sent, caller_got)
    until = (now or utcnow()) + timedelta(days=policy.content_days)
    return {**fields, "request": request, "response": response, "content_until": until}


def record_admin(session: Session, tenant: str, action: str, actor: str, **detail: Any) -> None:
    """An operator's action on ``tenant`` (``key.create``, ``tenant.disable`` ...), with what it changed."""
    append(session, tenant_id=tenant, kind="admin", action=action, actor=actor,
           key_id=detail.pop("key_id", None), decision=detail or None)


# -- the chain ------------------------------------------------------------------------------------------


def record_hash(prev_hash: str, record: dict[str, Any]) -> str:
    chained = {name: record.get(name) for name in CHAINED}
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(chained)).hexdigest()


def seal(engine: Engine | None = None, batch: int = BATCH_ROWS) -> int:
    """Chain one batch of unsealed records, oldest first, each after its tenant's last; how many."""
    with session_scope(engine) as db:
        rows = [r._asdict() for r in db.execute(
            select(*_AUDIT.c).where(_AUDIT.c.seq.is_(None)).order_by(_AUDIT.c.id).limit(batch))]
        if not rows:
            return 0
        heads = {tenant: _head(db, tenant) for tenant in {r["tenant_id"] for r in rows}}
        sealed = []
        for row in rows:
            seq, prev = heads[row["tenant_id"]]
            row.update(seq=seq + 1, prev_hash=prev)
            row["hash"] = record_hash(prev, row)
            heads[row["tenant_id"]] = (seq + 1, row["hash"])
            sealed.append({"eid": row["id"], "s_seq": row["seq"], "s_prev": prev, "s_hash": row["hash"]})
        db.execute(update(_AUDIT).where(_AUDIT.c.id == bindparam("eid"), _AUDIT.c.seq.is_(None))
                   .values(seq=bindparam("s_seq"), prev_hash=bindparam("s_prev"), hash=bindparam("s_hash")), sealed)
    return len(sealed)


def _head(db: Session, tenant: str) -> tuple[int, str]:
    last = db.execute(select(_AUDIT.c.seq, _AUDIT.c.hash).where(_AUDIT.c.tenant_id == tenant, _AUDIT.c.seq.is_not(None))
                      .order_by(_AUDIT.c.seq.desc()).limit(1)).first()
    return (0, GENESIS) if last is None else (int(last.seq), str(last.hash))


@dataclass
class Verified:
    """What ``verify`` found: sealed records per tenant, their chains' heads, records not yet sealed, problems."""

    records: dict[str, int] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    unsealed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(engine: Engine | None = None, tenant: str | None = None) -> Verified:
    """Walk every tenant's chain (or ``tenant``'s): numbering, links, each record's hash, and the hash
    of any content still kept."""
    found = Verified()
    with session_scope(engine, readonly=True) as db:
        query = select(_AUDIT.c.tenant_id).distinct()
        tenants = [tenant] if tenant else sorted(db.scalars(query.where(_AUDIT.c.seq.is_not(None))))
        unsealed = select(_AUDIT.c.id).where(_AUDIT.c.seq.is_(None))
        if tenant:
            unsealed = unsealed.where(_AUDIT.c.tenant_id == tenant)
        found.unsealed = len(db.execute(unsealed).all())
        for name in tenants:
            _verify_chain(db, name, found)
    return found


def _verify_chain(db: Session, tenant: str, found: Verified) -> None:
    expected_seq, prev = 1, GENESIS
    for row in _sealed_rows(db, tenant):
        where = f"tenant {tenant} record {row['seq']} (id {row['id']})"
        if row["seq"] != expected_seq:
            found.problems.append(f"{where}: expected record {expected_seq}: records are missing")
        if row["prev_hash"] != prev:
            found.problems.append(f"{where}: does not link to the record before it")
        if record_hash(row["prev_hash"], row) != row["hash"]:
            found.problems.append(f"{where}: its fields were changed after it was sealed")
        for part in ("request", "response"):
            if row[part] is not None and content_hash(row[part]) != row[f"{part}_sha256"]:
                found.problems.append(f"{where}: its {part} content was changed")
        expected_seq, prev = row["seq"] + 1, row["hash"]
    found.records[tenant] = expected_seq - 1
    found.heads[tenant] = prev


def _sealed_rows(db: Session, tenant: str) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        page = [r._asdict() for r in db.execute(
            select(*_AUDIT.c).where(_AUDIT.c.tenant_id == tenant, _AUDIT.c.seq > last)
            .order_by(_AUDIT.c.seq).limit(BATCH_ROWS))]
        yield from page
        if len(page) < BATCH_ROWS:
            return
        last = page[-1]["seq"]


# -- reading and retention ------------------------------------------------------------------------------


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the audit API and the export show it."""
    view = {name: row[name] for name in PUBLIC}
    for moment in ("at", "content_until"):
        view[moment] = row[moment].isoformat() if row[moment] else None
    return view


def query(session: Session, *, tenant: str | None, feature: str | None = None, since: datetime | None = None,
          until: datetime | None = None, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Records oldest first, after ``after_id``; ``tenant`` None means every tenant (the operators' view)."""
    stmt = select(*_AUDIT.c).where(_AUDIT.c.id > after_id)
    if tenant is not None:
        stmt = stmt.where(_AUDIT.c.tenant_id == tenant)
    if feature is not None:
        stmt = stmt.where(_AUDIT.c.feature == feature)
    if since is not None:
        stmt = stmt.where(_AUDIT.c.at >= since)
    if until is not None:
        stmt = stmt.where(_AUDIT.c.at < until)
    return [event_view(r._asdict()) for r in session.execute(stmt.order_by(_AUDIT.c.id).limit(limit))]


def purge_content(engine: Engine | None = None, now: datetime | None = None, batch: int = BATCH_ROWS) -> int:
    """Drop the request and response of one batch of records past their ``content_until``; how many."""
    due = (_AUDIT.c.content_until < (now or utcnow()),
           or_(_AUDIT.c.request.is_not(None), _AUDIT.c.response.is_not(None)))
    with session_scope(engine, readonly=True) as db:
        ids = list(db.scalars(select(_AUDIT.c.id).where(*due).order_by(_AUDIT.c.content_until).limit(batch)))
    if not ids:
        return 0
    with session_scope(engine) as db:
        result = db.execute(update(_AUDIT).where(_AUDIT.c.id.in_(ids), *due)
                            .values(request=null(), response=null()))
        return cast(CursorResult[Any], result).rowcount
