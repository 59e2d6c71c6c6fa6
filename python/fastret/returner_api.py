"""The functions Salt calls on a returner module, defined once for every fastret module.

A returner module (``returners/fastret_*.py``) declares ``__virtualname__`` and calls
``define(globals(), ...)``: this puts ``returner``, ``event_return`` and, for modules backed by
a database, the master job-cache interface into the module. Each function looks up Salt's
``__opts__``/``__salt__`` in the module's globals at call time (the loader injects them there),
asks for the module's backend, and never raises into Salt: failures are logged through Salt's
logger and a neutral value is returned.
"""

from __future__ import annotations

import logging

from fastret import salt_glue


def define(namespace: dict, job_cache: bool = True) -> None:
    """Define Salt's returner functions in a module's namespace (its ``globals()``)."""
    name = namespace["__virtualname__"]
    log = logging.getLogger(namespace["__name__"])

    def backend(ret=None):
        opts, funcs = namespace["__opts__"], namespace.get("__salt__")
        if name == "fastret":
            return salt_glue.routed_backend(opts, ret, funcs)
        return salt_glue.sink_backend(name, opts, funcs, ret)

    def call(what, fn, default=None):
        return salt_glue.call(log, f"{name}.{what}", fn, default)

    def __virtual__():
        return salt_glue.check_virtual(name, namespace["__opts__"], namespace.get("__salt__"))

    def returner(ret):
        """Deliver one job return (``--return``, schedule ``returner:``, master_job_cache)."""
        call("returner", lambda: backend(ret).returner(ret))

    def event_return(events):
        """Deliver events from the master's event bus (``event_return``)."""
        call("event_return", lambda: backend().event_return(events))

    functions = [__virtual__, returner, event_return]

    if job_cache:
        def prep_jid(nocache=False, passed_jid=None, recurse_count=0):  # noqa: ARG001 - Salt's
            """Return the jid to use (``passed_jid`` or a new one)."""
            return call("prep_jid", lambda: backend().prep_jid(nocache, passed_jid), passed_jid)

        def save_load(jid, load, minions=None):
            """Store a job's publish load (insert-if-absent) and its minion list."""
            call("save_load", lambda: backend().save_load(jid, load, minions))

        def save_minions(jid, minions, syndic_id=None):
            """Store the minions a job was published to."""
            call("save_minions", lambda: backend().save_minions(jid, minions, syndic_id))

        def update_endtime(jid, time):
            """Store a job's end time."""
            call("update_endtime", lambda: backend().update_endtime(jid, time))

        def get_endtime(jid):
            """A job's end time, or False."""
            return call("get_endtime", lambda: backend().get_endtime(jid), False)

        def get_load(jid):
            """A job's load, with ``Minions`` when known."""
            return call("get_load", lambda: backend().get_load(jid), {})

        def get_jid(jid):
            """Every minion's return for a job: ``{minion: {"return": ..., "retcode": ...}}``."""
            return call("get_jid", lambda: backend().get_jid(jid), {})

        def get_fun(fun):
            """Each minion that has called ``fun``: ``{minion: fun}``."""
            return call("get_fun", lambda: backend().get_fun(fun), {})

        def get_jids():
            """All jobs: ``{jid: format_jid_instance}``."""
            return call("get_jids", lambda: backend().get_jids(), {})

        def get_jids_filter(count, filter_find_job=True):
            """The ``count`` most recent jobs, oldest first."""
            return call("get_jids_filter",
                        lambda: backend().get_jids_filter(count, filter_find_job), [])

        def get_minions():
            """Minions that have returned at least once."""
            return call("get_minions", lambda: backend().get_minions(), [])

        def clean_old_jobs():
            """Delete jobs (load and returns together) older than ``keep_jobs_seconds``."""
            call("clean_old_jobs", lambda: backend().clean_old_jobs())

        functions += [prep_jid, save_load, save_minions, update_endtime, get_endtime, get_load,
                      get_jid, get_fun, get_jids, get_jids_filter, get_minions, clean_old_jobs]

    for fn in functions:
        fn.__module__ = namespace["__name__"]
        namespace[fn.__name__] = fn
