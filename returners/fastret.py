"""Salt returner ``fastret``: the routed pipeline (the ``fastret:`` block), or with no
configuration the embedded default (a SQLite job store and a JSON-lines audit file under
Salt's cachedir). Also a master job cache when a database sink is configured.

Usage::

    salt-call --local test.ping --return fastret
    master_job_cache: fastret
    event_return: fastret
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals())
