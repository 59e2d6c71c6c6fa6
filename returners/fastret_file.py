"""Salt returner ``fastret_file``: job returns and events as JSON lines in a local file.

Usage::

    salt-call --local test.ping --return fastret_file
    event_return: fastret_file
    fastret_file.path: /var/log/salt/returns.jsonl
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_file"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals(), job_cache=False)
