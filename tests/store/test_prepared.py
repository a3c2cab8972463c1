"""``shared.db.prepared``: statements run on the session's cursor behave as ``Connection.execute`` would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError, StatementError

from shared.db.models import Attempt, Job
from shared.db.prepared import Prepared
from tests.store.conftest import Scope, new_job

pytestmark = pytest.mark.usefixtures("two_tenants")

_ATTEMPTS, _JOBS = (cast(Table, model.__table__) for model in (Attempt, Job))

ADD = Prepared(lambda: insert(_ATTEMPTS).values(
    job_id=bindparam("job_id"), number=bindparam("number"), deployment=bindparam("deployment"),
).returning(_ATTEMPTS.c.id, _ATTEMPTS.c.status, _ATTEMPTS.c.tokens_in, _ATTEMPTS.c.cost_usd,
            _ATTEMPTS.c.started_at, _ATTEMPTS.c.ended_job))
FINISH = Prepared(lambda: update(_JOBS).where(_JOBS.c.id == bindparam("jid"), _JOBS.c.status.in_(("queued", "running")))
                  .values(status="succeeded", cost_usd=bindparam("cost", type_=_JOBS.c.cost_usd.type),
                          cache_similarity=bindparam("similarity", type_=_JOBS.c.cache_similarity.type),
                          result=bindparam("answer", type_=_JOBS.c.result.type))
                  .returning(_JOBS.c.status, _JOBS.c.cost_usd, _JOBS.c.cache_similarity, _JOBS.c.result,
                             _JOBS.c.created_at, _JOBS.c.updated_at))
NUMBERS = Prepared(lambda: select(_ATTEMPTS.c.number).where(_ATTEMPTS.c.job_id == bindparam("job_id"))
                   .order_by(_ATTEMPTS.c.number))


def _job(scope: Scope) -> str:
    with scope() as s:
        job, _ = new_job(s)
    return job.id


def test_an_insert_fills_python_defaults_and_returns_typed_rows(scope: Scope) -> None:
    job_id = _job(scope)
    before = datetime.now(UTC)
    with scope() as s:
        row = ADD.run(s, job_id=job_id, number=1, deployment="d1").first()
    assert (row.status, row.tokens_in, row.cost_usd, row.ended_job) == ("running", 0, 0.0, False)
    assert row.started_at.tzinfo == UTC and row.started_at >= before
    with scope(readonly=True) as s:
        stored = s.get(Attempt, row.id)
        assert stored is not None and stored.started_at == row.started_at and stored.status == "running"


def test_an_update_sets_onupdate_constants_and_json(scope: Scope) -> None:
    job_id = _job(scope)
    with scope() as s:
        done = FINISH.run(s, jid=job_id, cost=0.125, similarity=0.5, answer={"text": "hi", "n": [1, 2]})
    row = done.first()
    assert done.rowcount == 1 and row.status == "succeeded"
    assert (row.cost_usd, row.cache_similarity, row.result) == (0.125, 0.5, {"text": "hi", "n": [1, 2]})
    assert isinstance(row.cost_usd, float) and row.updated_at > row.created_at
    with scope() as s:  # the constant IN list guards it: no longer queued or running
        assert FINISH.run(s, jid=job_id, cost=1.0, similarity=None, answer=None) == ([], 0)


def test_rows_are_what_connection_execute_returns(scope: Scope) -> None:
    jobs = [_job(scope), _job(scope)]
    answer = {"text": "hi", "n": [1.5, None]}
    with scope() as s:
        ours = FINISH.run(s, jid=jobs[0], cost=0.1, similarity=0.25, answer=answer).first()
        theirs = s.connection().execute(FINISH._build(), {
            "jid": jobs[1], "cost": 0.1, "similarity": 0.25, "answer": answer}).first()
        added = [ADD.run(s, job_id=jobs[0], number=1, deployment="d").first(),
                 s.connection().execute(ADD._build(), {"job_id": jobs[1], "number": 1, "deployment": "d"}).first()]
    assert theirs is not None and ours._fields == theirs._fields
    for mine, expected in [*zip(ours, theirs, strict=True), *zip(added[0][1:], added[1][1:], strict=True)]:
        assert type(mine) is type(expected)
        if not isinstance(mine, datetime):
            assert mine == expected


def test_many_runs_every_parameter_set_and_a_select_reads_them(scope: Scope) -> None:
    job_id = _job(scope)
    many = Prepared(lambda: insert(_ATTEMPTS).values(job_id=bindparam("job_id"), number=bindparam("number"),
                                                     deployment=bindparam("deployment")))
    with scope() as s:
        assert many.many(s, [{"job_id": job_id, "number": n, "deployment": "d"} for n in (1, 2, 3)]) == 3
        assert many.many(s, []) == 0
    with scope(readonly=True) as s:
        assert [r.number for r in NUMBERS.run(s, job_id=job_id).rows] == [1, 2, 3]
        assert [tuple(r) for r in NUMBERS.run(s, job_id=job_id).rows] == [(1,), (2,), (3,)]


def test_a_constraint_violation_is_sqlalchemys_integrity_error(scope: Scope) -> None:
    job_id = _job(scope)
    with scope() as s:
        ADD.run(s, job_id=job_id, number=1, deployment="d")
    with pytest.raises(IntegrityError) as caught, scope() as s:
        ADD.run(s, job_id=job_id, number=1, deployment="d")
    assert "INSERT INTO attempts" in str(caught.value)
    with scope() as s:  # the session's connection is still usable afterwards
        assert ADD.run(s, job_id=job_id, number=2, deployment="d").first().status == "running"


def test_a_bad_value_is_a_statement_error_and_per_call_in_lists_are_refused(scope: Scope) -> None:
    job_id = _job(scope)
    with pytest.raises(StatementError), scope() as s:
        ADD.run(s, job_id=job_id, number=1)  # no deployment
    naive = Prepared(lambda: update(_JOBS).where(_JOBS.c.id == bindparam("jid"))
                     .values(finished_at=bindparam("at", type_=_JOBS.c.finished_at.type)))
    with pytest.raises(StatementError, match="naive datetime"), scope() as s:
        naive.run(s, jid=job_id, at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    expanding = Prepared(lambda: select(_JOBS.c.id).where(_JOBS.c.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="expanding"), scope() as s:
        expanding.run(s, ids=[job_id])


def test_a_rollback_undoes_a_prepared_write(scope: Scope) -> None:
    job_id = _job(scope)
    with pytest.raises(RuntimeError), scope() as s:
        ADD.run(s, job_id=job_id, number=1, deployment="d")
        assert [r.number for r in NUMBERS.run(s, job_id=job_id).rows] == [1]  # visible in its transaction
        raise RuntimeError("roll it back")
    with scope(readonly=True) as s:
        assert NUMBERS.run(s, job_id=job_id).rows == []
        assert s.scalars(select(Attempt.id)).all() == []


def test_cursor_listeners_see_each_statement(scope: Scope, engine: Engine) -> None:
    job_id = _job(scope)
    seen: list[tuple[str, str, bool]] = []

    def before(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        seen.append(("before", statement.split()[0], many))

    def after(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, many: bool) -> None:
        seen.append(("after", statement.split()[0], many))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with scope() as s:
            ADD.run(s, job_id=job_id, number=1, deployment="d")
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    assert ("before", "INSERT", False) in seen and ("after", "INSERT", False) in seen
