"""Salt returner ``fastret_syslog``: job returns and events to syslog (RFC 5424/3164 over UDP, TCP, TLS or the local socket).

Usage::

    salt-call --local state.apply --return fastret_syslog
    event_return: fastret_syslog
    fastret_syslog.transport: tls
    fastret_syslog.host: logs.example.com
    fastret_syslog.tls_ca_file: /etc/ssl/certs/logs-ca.pem
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_syslog"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals(), job_cache=False)
