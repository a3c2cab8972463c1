"""The SQL result store: the durable truth about tenants, keys, jobs and attempts.

    models.py    typed tables (Tenant, ApiKey, Job, Attempt)
    session.py   engines for SQLite/PostgreSQL and ``session_scope()`` (one short transaction)
    migrate.py   Alembic upgrade/downgrade from Python (``gateway migrate``)
    tenants.py   tenants, API keys, authentication
    jobs.py      the job repository: conditional status transitions, attempts, listing
"""

from shared.db.models import ApiKey, Attempt, Base, Job, Tenant
from shared.db.session import get_engine, make_engine, session_scope

__all__ = ["ApiKey", "Attempt", "Base", "Job", "Tenant", "get_engine", "make_engine", "session_scope"]
