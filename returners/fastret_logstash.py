"""Salt returner ``fastret_logstash``: job returns and events to Logstash (ECS JSON lines over TCP/TLS, HTTP(S) batches, GELF, CEF).

Usage::

    salt-call --local state.apply --return fastret_logstash
    event_return: fastret_logstash
    fastret_logstash.protocol: tls
    fastret_logstash.host: logstash.example.com
    fastret_logstash.port: 5000
"""

try:
    from fastret import returner_api
except ImportError as _exc:  # fastret is not installed in the Python that runs Salt
    _IMPORT_ERROR = str(_exc)

    def __virtual__():
        return False, f"the fastret package is not importable: {_IMPORT_ERROR}"

__virtualname__ = "fastret_logstash"

if "_IMPORT_ERROR" not in globals():
    returner_api.define(globals(), job_cache=False)
