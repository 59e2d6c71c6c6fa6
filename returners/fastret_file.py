"""Salt returner ``fastret_file``: job returns and events as JSON lines in a local file.

Usage::

    salt-call --local state.apply --return fastret_file
    fastret_file.path: /var/log/salt/returns.jsonl
"""

import logging

try:
    from fastret import salt_glue

    HAS_FASTRET = True
except ImportError as _exc:  # fastret not installed in Salt's Python
    HAS_FASTRET = False
    _IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "fastret_file"


def __virtual__():
    if not HAS_FASTRET:
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"
    return salt_glue.check_virtual(__virtualname__, __opts__, __salt__)


def _backend(ret=None):
    return salt_glue.sink_backend(__virtualname__, __opts__, __salt__, ret)


def returner(ret):
    """Deliver one job return (``--return fastret_file``, schedule ``returner:``, master_job_cache)."""
    salt_glue.call(log, "fastret_file.returner", lambda: _backend(ret).returner(ret))


def event_return(events):
    """Deliver events from the master's event bus (``event_return: fastret_file``)."""
    salt_glue.call(log, "fastret_file.event_return", lambda: _backend().event_return(events))
