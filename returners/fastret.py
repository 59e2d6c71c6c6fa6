"""Salt returner ``fastret``: the routed pipeline (the ``fastret:`` block), or with no
configuration the embedded default (a SQLite job store and a JSON-lines audit file under
Salt's cachedir). Also a master job cache when a sqlite sink is configured.

Usage::

    salt-call --local test.ping --return fastret
    master_job_cache: fastret
    event_return: fastret
"""

import logging

try:
    from fastret import salt_glue

    HAS_FASTRET = True
except ImportError as _exc:  # fastret not installed in Salt's Python
    HAS_FASTRET = False
    _IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "fastret"


def __virtual__():
    if not HAS_FASTRET:
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"
    return salt_glue.check_virtual(__virtualname__, __opts__, __salt__)


def _backend(ret=None):
    return salt_glue.routed_backend(__opts__, ret, __salt__)


def returner(ret):
    """Deliver one job return (``--return fastret``, schedule ``returner:``, master_job_cache)."""
    salt_glue.call(log, "fastret.returner", lambda: _backend(ret).returner(ret))


def event_return(events):
    """Deliver events from the master's event bus (``event_return: fastret``)."""
    salt_glue.call(log, "fastret.event_return", lambda: _backend().event_return(events))


def prep_jid(nocache=False, passed_jid=None, recurse_count=0):  # pylint: disable=unused-argument
    """Return the jid to use (``passed_jid`` or a new one)."""
    return salt_glue.call(log, "fastret.prep_jid",
                          lambda: _backend().prep_jid(nocache, passed_jid), passed_jid)


def save_load(jid, load, minions=None):
    """Store a job's publish load (insert-if-absent) and its minion list."""
    salt_glue.call(log, "fastret.save_load", lambda: _backend().save_load(jid, load, minions))


def save_minions(jid, minions, syndic_id=None):
    """Store the minions a job was published to."""
    salt_glue.call(log, "fastret.save_minions",
                   lambda: _backend().save_minions(jid, minions, syndic_id))


def update_endtime(jid, time):
    """Store a job's end time."""
    salt_glue.call(log, "fastret.update_endtime", lambda: _backend().update_endtime(jid, time))


def get_endtime(jid):
    """A job's end time, or False."""
    return salt_glue.call(log, "fastret.get_endtime", lambda: _backend().get_endtime(jid), False)


def get_load(jid):
    """A job's load, with ``Minions`` when known."""
    return salt_glue.call(log, "fastret.get_load", lambda: _backend().get_load(jid), {})


def get_jid(jid):
    """Every minion's return for a job: ``{minion: {"return": ..., "retcode": ...}}``."""
    return salt_glue.call(log, "fastret.get_jid", lambda: _backend().get_jid(jid), {})


def get_fun(fun):
    """Each minion's most recent call of ``fun``: ``{minion: fun}``."""
    return salt_glue.call(log, "fastret.get_fun", lambda: _backend().get_fun(fun), {})


def get_jids():
    """All jobs: ``{jid: format_jid_instance}``."""
    return salt_glue.call(log, "fastret.get_jids", lambda: _backend().get_jids(), {})


def get_jids_filter(count, filter_find_job=True):
    """The ``count`` most recent jobs, oldest first."""
    return salt_glue.call(log, "fastret.get_jids_filter",
                          lambda: _backend().get_jids_filter(count, filter_find_job), [])


def get_minions():
    """Minions that have returned at least once."""
    return salt_glue.call(log, "fastret.get_minions", lambda: _backend().get_minions(), [])


def clean_old_jobs():
    """Delete jobs (load and returns together) older than ``keep_jobs_seconds``."""
    salt_glue.call(log, "fastret.clean_old_jobs", lambda: _backend().clean_old_jobs())
