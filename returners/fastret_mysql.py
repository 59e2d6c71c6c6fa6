"""Salt returner ``fastret_mysql``: job cache and event store in MySQL/MariaDB (one persistent
connection per process, batched writes, verified TLS by default). Reads the stock ``mysql.*``
keys when its own are not set, and keeps saltext-mysql's tables, so that switching is a
one-line change.

Usage::

    master_job_cache: fastret_mysql
    event_return: fastret_mysql
    fastret_mysql.host: db.example.org
    fastret_mysql.pass_file: /etc/salt/fastret_mysql.pass
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_mysql"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals())
