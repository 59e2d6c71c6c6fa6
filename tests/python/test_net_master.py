"""`event_return: fastret_logstash` on a real salt-master (127.0.0.1): the master's event bus
goes as ECS JSON lines over verified TLS to a receiver, job events and runner events alike."""

import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO, run_runner, run_salt, wait_for

sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import certs  # noqa: E402
from netpeers import Receiver  # noqa: E402


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    pki = certs.make_pki(tmp_path_factory.mktemp("pki"))
    srv = Receiver(certfile=pki["server"], keyfile=pki["server_key"])
    srv.pki = pki
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def master(salt_factories, receiver):
    m = salt_factories.salt_master_daemon(
        f"frl-{uuid.uuid4().hex[:6]}",
        overrides={"interface": "127.0.0.1", "event_return": "fastret_logstash",
                   "fastret_logstash": {"protocol": "tls", "host": "127.0.0.1",
                                        "port": receiver.port,
                                        "tls_ca_file": receiver.pki["ca"]}})
    with m.started(start_timeout=120):
        yield m


@pytest.fixture(scope="module")
def minion(master):
    mi = master.salt_minion_daemon(f"frlm-{uuid.uuid4().hex[:6]}",
                                   overrides={"master": "127.0.0.1"})
    with mi.started(start_timeout=120):
        yield mi


def docs_with(receiver, pred):
    return [d for d in receiver.docs() if pred(d)]


def test_runner_event_arrives_as_ecs(master, receiver):
    tag = f"fastret/logstash/{uuid.uuid4().hex[:8]}"
    assert run_runner(master, "event.send", tag, '{"x": 1}') is True
    (doc,) = wait_for(lambda: docs_with(receiver, lambda d: d["salt"].get("tag") == tag),
                      what=f"event {tag} at the receiver")
    assert doc["event"]["kind"] == "event" and doc["salt"]["kind"] == "event"
    assert doc["salt"]["data"]["x"] == 1
    assert doc["host"]["name"] == master.id
    assert receiver.handshake_errors == []


def test_job_events_arrive(master, minion, receiver):
    jid, data, _ = run_salt(master, "test.ping")
    assert data == {minion.id: True}
    rets = wait_for(lambda: docs_with(receiver, lambda d: d["salt"].get("tag", "").startswith(
        f"salt/job/{jid}/ret/")), what="the job's return event")
    (ret,) = rets
    assert ret["salt"]["jid"] == jid and ret["event"]["action"] == "test.ping"
    assert ret["event"]["outcome"] == "success"
    assert ret["salt"]["data"]["return"] is True
