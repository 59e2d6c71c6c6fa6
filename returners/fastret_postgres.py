"""Salt returner ``fastret_postgres``: job cache and event store in PostgreSQL (libpq, one
persistent connection per process, batched writes, verified TLS by default). Reads the stock
``returner.pgjsonb.*`` / ``returner.postgres.*`` keys when its own are not set, and keeps the
pgjsonb tables, so that switching is a one-line change.

Usage::

    master_job_cache: fastret_postgres
    event_return: fastret_postgres
    fastret_postgres.host: db.example.org
    fastret_postgres.pass_file: /etc/salt/fastret_postgres.pass
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_postgres"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals())
