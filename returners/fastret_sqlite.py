"""Salt returner ``fastret_sqlite``: the embedded job cache and event store (SQLite, WAL).

Usage::

    master_job_cache: fastret_sqlite
    event_return: fastret_sqlite
    fastret_sqlite.path: /var/cache/salt/master/fastret/fastret.db
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_sqlite"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals())
