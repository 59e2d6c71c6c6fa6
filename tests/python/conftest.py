"""Shared fixtures of the Python/Salt test suite.

Everything here drives real Salt (the salt-call, salt, salt-run and fastret executables of the
virtualenv that runs pytest) against temporary root directories; nothing of Salt is mocked.
Outcomes are read back from what fastret wrote: SQLite rows, JSON lines, spool files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_BIN = Path(sys.executable).parent
SALT_CALL = str(VENV_BIN / "salt-call")
FASTRET = str(VENV_BIN / "fastret")

# Every test gets this unless it sets its own: a hung Salt process fails the test instead of
# blocking the suite.
DEFAULT_TIMEOUT = 300

# A custom execution module with awkward return values. It lives in <file_roots>/_modules and
# reaches Salt the way a user's would: through saltutil.sync_modules.
FRBAD_MODULE = textwrap.dedent('''
    """Awkward return values for fastret's bad-input tests."""

    INJECTION = {
        "sql": "'); DROP TABLE salt_returns;--",
        "sql2": "x' OR '1'='1",
        "json": '{"a":',
        "json2": '"}]}, {"injected": true',
        "quotes": "single ' double \\" backslash \\\\ end",
        "nul": "before\\x00after",
        "newlines": "line1\\nline2\\r\\n{\\"kind\\":\\"job_return\\"}",
        "k'ey\\"\\\\": "value",
        "unicode": "h\\u00e9llo \\u2603 \\U0001f600",
    }


    def injection():
        return INJECTION


    def raw_bytes():
        return b"ok \\xff\\xfe bad \\xc3\\x28 mid \\xed\\xa0\\x80 end \\xe2\\x82\\xac"


    def big(size=5 * 1024 * 1024):
        size = int(size)
        return ("0123456789abcdef" * (size // 16 + 1))[:size]


    def deep(levels=200):
        root = cur = {}
        for _ in range(int(levels)):
            cur["d"] = {}
            cur = cur["d"]
        cur["leaf"] = True
        return root


    def fail():
        __context__["retcode"] = 3
        return "'); DROP TABLE jids;--"
''')

# A state that changes a file on every run (its content carries a marker passed as pillar).
CHANGEFILE_SLS = textwrap.dedent("""
    fastret-test-file:
      file.managed:
        - name: {{ pillar['target'] }}
        - makedirs: True
        - contents: "marker {{ pillar['marker'] }}"
""")


def yaml_dump(data) -> str:
    import salt.utils.yaml  # noqa: PLC0415 - the YAML Salt itself reads

    return salt.utils.yaml.safe_dump(data, default_flow_style=False)


def read_jsonl(path) -> list:
    """Every line of a JSON-lines file, parsed; [] if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out


def db_query(path, sql, params=()) -> list:
    """Rows of a query against a fastret SQLite store (opened by the stdlib, not by fastret)."""
    con = sqlite3.connect(str(path), timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def returns_of(path, jid) -> list:
    """(id, fun, success, retcode, full_ret as dict) of every salt_returns row of a job."""
    rows = db_query(path, "SELECT id, fun, success, retcode, full_ret FROM salt_returns "
                          "WHERE jid = ? ORDER BY id", (jid,))
    return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def wait_for(predicate, timeout=60.0, interval=0.25, what="condition"):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALT_", "FASTRET_"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class CallResult:
    proc: subprocess.CompletedProcess
    data: object = None  # parsed JSON output under "local", when --out=json

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def stdout(self):
        return self.proc.stdout

    @property
    def stderr(self):
        return self.proc.stderr

    @property
    def jid(self):
        """The jid (needs --metadata)."""
        return self.data["jid"]

    @property
    def ret(self):
        """The function's return (needs --metadata)."""
        return self.data["return"]


@dataclass
class MinionEnv:
    """A salt-call --local environment: config dir, root_dir, file_roots, all under `base`."""

    base: Path
    minion_id: str = "fastret-test-minion"
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.conf_dir = self.base / "etc" / "salt"
        self.root_dir = self.base / "root"
        self.file_roots = self.base / "srv" / "salt"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.file_roots.mkdir(parents=True, exist_ok=True)
        self.write_config(self.config)

    def write_config(self, extra: dict | None = None):
        """(Re)write the minion config: the base settings plus `extra`."""
        self.config = dict(extra or {})
        cfg = {
            "id": self.minion_id,
            "root_dir": str(self.root_dir),
            "file_client": "local",
            "file_roots": {"base": [str(self.file_roots)]},
            "pillar_roots": {"base": [str(self.base / "srv" / "pillar")]},
            "log_level_logfile": "info",
        }
        cfg.update(self.config)
        (self.conf_dir / "minion").write_text(yaml_dump(cfg), encoding="utf-8")

    # -- where fastret writes by default ------------------------------------------------
    @property
    def cachedir(self) -> Path:
        return self.root_dir / "var" / "cache" / "salt" / "minion"

    @property
    def fastret_dir(self) -> Path:
        return self.cachedir / "fastret"

    @property
    def store_path(self) -> Path:
        return self.fastret_dir / "fastret.db"

    @property
    def audit_path(self) -> Path:
        return self.fastret_dir / "audit.jsonl"

    @property
    def returns_path(self) -> Path:
        return self.fastret_dir / "returns.jsonl"

    @property
    def spool_root(self) -> Path:
        return self.fastret_dir / "spool"

    @property
    def log_path(self) -> Path:
        return self.root_dir / "var" / "log" / "salt" / "minion"

    def log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    # -- running things ---------------------------------------------------------------------
    def salt_call(self, *args, returner=None, metadata=True, out="json", check=True,
                  timeout=240) -> CallResult:
        cmd = [SALT_CALL, "--local", "-c", str(self.conf_dir), "--log-level=warning"]
        if out:
            cmd.append(f"--out={out}")
        if metadata:
            cmd.append("--metadata")
        cmd += [str(a) for a in args]
        if returner:
            cmd.append(f"--return={returner}")
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                              timeout=timeout, env=clean_env(), cwd=str(self.base), check=False)
        result = CallResult(proc)
        if out == "json" and proc.stdout.strip():
            try:
                result.data = json.loads(proc.stdout)["local"]
            except ValueError:
                result.data = None
        if check:
            assert proc.returncode == 0, (
                f"salt-call failed ({proc.returncode})\ncmd: {cmd}\nstdout: {proc.stdout[-3000:]}"
                f"\nstderr: {proc.stderr[-3000:]}")
        return result

    def fastret(self, *args, module=False, timeout=120) -> subprocess.CompletedProcess:
        """The fastret CLI on this config (console script, or `python -m fastret`)."""
        head = [sys.executable, "-m", "fastret"] if module else [FASTRET]
        return subprocess.run(head + ["-c", str(self.conf_dir)] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=timeout, env=clean_env(),
                              cwd=str(self.base), check=False)

    def add_module(self, name: str, source: str):
        mods = self.file_roots / "_modules"
        mods.mkdir(exist_ok=True)
        (mods / f"{name}.py").write_text(source, encoding="utf-8")

    def add_state(self, name: str, source: str):
        (self.file_roots / f"{name}.sls").write_text(source, encoding="utf-8")


@pytest.fixture
def minion_env(tmp_path):
    """A fresh salt-call --local environment per test."""
    return MinionEnv(tmp_path / "env")


@pytest.fixture
def make_minion_env(tmp_path):
    """Factory of salt-call --local environments (name, config)."""

    def make(name="env", config=None, minion_id="fastret-test-minion"):
        return MinionEnv(tmp_path / name, minion_id=minion_id, config=config or {})

    return make


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT))


# ---------------------------------------------------------------------------------------------
# master/minion helpers (salt-factories daemons)

# Salt jids are 20 digits, with `unique_jid: True` followed by `_<pid>`.
JID_RE = re.compile(r"jid:? (\d{20}(?:_\d+)?)")


def run_salt(master, *args, tgt="*"):
    """`salt <tgt> <args>` with -v: returns (jid, data per minion, process result)."""
    res = master.salt_cli(timeout=120).run("-v", *args, minion_tgt=tgt)
    assert res.returncode == 0, res
    match = JID_RE.search(res.stdout)
    assert match, res.stdout
    # -v prints the jid, a rule, then one JSON document per minion.
    decoder = json.JSONDecoder()
    text = res.stdout[res.stdout.index("{"):]
    data, pos = {}, 0
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        data.update(doc)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return match.group(1), data, res


def run_runner(master, *args):
    res = master.salt_run_cli(timeout=120).run(*args)
    assert res.returncode == 0, res
    return res.data


# ---------------------------------------------------------------------------------------------
# salt-factories: loopback only, short root directory.
#
# The factories' log server and event listener bind 0.0.0.0 by default; the suite uses
# loopback addresses only, so both are moved to 127.0.0.1 before they start.


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    from saltfactories.plugins.event_listener import EventListener  # noqa: PLC0415

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener


@pytest.fixture(scope="session")
def salt_factories_config():
    # Unix socket paths are limited to 108 bytes: keep the daemons' root short.
    root = tempfile.mkdtemp(prefix="frt-", dir="/tmp")
    yield {"root_dir": root}
    shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # Salt's deferred console handler (set up when salt-factories imports Salt into this
    # process) buffers the daemons' forwarded warnings and writes them at exit to the stderr it
    # saw at import, which pytest has closed by then: pages of "--- Logging error ---". Those
    # records are in the daemons' log files and in each test's captured log already.
    impl = sys.modules.get("salt._logging.impl")
    handler = impl.get_temp_handler() if impl is not None else None
    if handler is not None:
        handler.stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives until exit


# ---------------------------------------------------------------------------------------------
# database servers for the job-cache backends: throwaway instances started by the fixtures in
# tests/fixtures/ (free loopback ports, TLS with a CA made at test time), one per session and
# server type, started on first use; every test module gets a database of its own.

sys.path.insert(0, str(REPO / "tests" / "fixtures"))


@dataclass
class DbBackend:
    name: str      # sqlite, postgres, mysql
    module: str    # the returner module
    options: dict  # the module's options (also the job store's)

    def store(self):
        import fastret  # noqa: PLC0415

        return fastret.native().open_store(self.name, dict(self.options))


class DbServers:
    def __init__(self, root: Path):
        self.root = root
        self.info = {}

    def directory(self, kind: str, instance: str = "main") -> str:
        return str(self.root / f"{kind}-{instance}")

    def server(self, kind: str, instance: str = "main") -> dict:
        """The session's server of `kind` (one per instance name: fault tests that stop and
        kill servers get one of their own)."""
        if (kind, instance) not in self.info:
            module = __import__(f"{kind}_server")
            self.info[(kind, instance)] = module.start(self.directory(kind, instance))
        return self.info[(kind, instance)]

    def control(self, kind: str, instance: str = "main"):
        """(stop, start, kill) of a server, each without arguments."""
        module, d = __import__(f"{kind}_server"), self.directory(kind, instance)
        # postgres_server.stop() removes the data unless told not to; mysql_server's keeps it.
        stop = (lambda: module.stop(d, remove=False)) if kind == "postgres" else (
            lambda: module.stop(d))
        return stop, (lambda: module.start(d)), (lambda: module.kill(d))

    def backend(self, kind: str, name: str, instance: str = "main") -> DbBackend:
        """A fresh database (named ft_<name>) on the session's server of `kind`."""
        dbname = f"ft_{name}"
        if kind == "sqlite":
            return DbBackend("sqlite", "fastret_sqlite", {"path": str(self.root / f"{dbname}.db")})
        info = self.server(kind, instance)
        create_database(kind, self.directory(kind, instance), info, dbname)
        return DbBackend(kind, f"fastret_{kind}", store_options(kind, info, dbname))

    def stop_all(self):
        for kind, instance in self.info:
            __import__(f"{kind}_server").stop(self.directory(kind, instance))


def create_database(kind: str, directory: str, info: dict, dbname: str) -> None:
    """An empty database the fixture's unprivileged test user may use (and create tables in)."""
    module = __import__(f"{kind}_server")
    if kind == "mysql":
        module.query(directory, f"CREATE DATABASE `{dbname}`")  # the user owns every ft_* db
    else:
        module.run_sql(directory, f'CREATE DATABASE "{dbname}" OWNER "{info["user"]}"')


def store_options(kind: str, info: dict, dbname: str) -> dict:
    """fastret_<kind> options for the fixture's server: the unprivileged test user over TCP
    with verified TLS (the fixture's CA)."""
    if kind == "postgres":
        return {"host": info["host"], "port": info["port"], "user": info["user"],
                "pass": info["password"], "db": dbname, "sslmode": "verify-full",
                "sslrootcert": info["ca"]}
    return {"host": info["host"], "port": info["port"], "user": info["user"],
            "pass": info["password"], "db": dbname, "ssl_ca": info["ca"]}


@pytest.fixture(scope="session")
def db_servers():
    root = Path(tempfile.mkdtemp(prefix="frdb-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user and must reach its directory
    servers = DbServers(root)
    yield servers
    servers.stop_all()
    shutil.rmtree(root, ignore_errors=True)
