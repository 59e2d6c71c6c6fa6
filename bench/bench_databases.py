#!/usr/bin/env python3
"""fastret database benchmark: fastret_postgres and fastret_mysql against Salt's stock database
returners, on the same server instances, in one run.

A benchmark, not a test: it prints absolute rates and ratios, checks them against the project's
targets, and optionally writes everything as JSON. Run it with the virtualenv that has Salt,
fastret and bench/requirements.txt installed::

    .venv/bin/python bench/bench_databases.py [--quick] [--json results.json]

Sections (see bench/README.md for what each number means):

 1. event_return() events/s, batches of 100 realistic ~500 B events: stock pgjsonb, postgres
    and saltext-mysql's mysql against fastret_postgres and fastret_mysql (fastret timed until
    delivered into the database), and the servers' own bulk path for the same rows as the
    physical reference (PostgreSQL COPY FROM STDIN, MariaDB LOAD DATA LOCAL INFILE).
 2. returner() calls/s with a realistic state.apply job return.
 3. save_load() latency (median, p95), a new jid per call.
 4. Server connections each returner opened (fastret: one per process).

Every returner is loaded the way Salt loads it: salt.loader.returners(opts, {}) with master
options from a temporary config file. Each returner writes to its own database, and its tables
are truncated before every case; after every case the rows are counted.

The servers are throwaway servers started from tests/fixtures/postgres_server.py and
tests/fixtures/mysql_server.py with durable settings; --pg-dsn / --mysql-host use an existing
server instead. Everything happens under one temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import inspect
import json
import logging
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402  (same directory: generators, Salt set-up, formats)
from benchlib import REPO  # noqa: E402

# Used only when neither the fixture modules nor --pg-dsn / --mysql-* are there (see
# start_postgres / start_mysql): the machine's own services, with a warning.
FALLBACK_PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
FALLBACK_MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}

EVENT_BATCH = 100  # events per event_return() call, as Salt's EventReturn batches them
MAX_BATCHES_PER_CHUNK = 100  # bench_foundation's chunk: 100 batches, then a flush
REF_ROWS = 10_000  # rows per COPY / LOAD DATA statement (one commit each) in the reference
TABLES = ("salt_events", "salt_returns", "jids")
MINIONS = [f"minion-{i:04d}.example.com" for i in range(50)]

# ---------------------------------------------------------------------------------------------
# helpers


class ErrorLog(logging.Handler):
    """Keeps the ERROR records that Salt's and fastret's returners log (they never raise):
    a case whose rows do not arrive shows the first one."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            msg = str(record.msg)
        self.records.append(f"{record.name}: {msg}".splitlines()[0][:300])

    def mark(self):
        return len(self.records)

    def since(self, mark):
        return self.records[mark:]


ERRORS = ErrorLog()


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values, p):
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def redact(d: dict) -> dict:
    return {k: ("***" if "password" in k or k == "pass" else v) for k, v in d.items()
            if not callable(v)}


def stock_ddl(module) -> list:
    """The schema statements from a stock returner's docstring (its `.. code-block:: sql`
    blocks), without CREATE DATABASE / ROLE / USE and the psql wrapper lines."""
    out = []
    for block in re.findall(r"\.\. code-block:: sql\n\n((?:(?:    .*)?\n)+)", module.__doc__ or ""):
        lines = [s for s in (ln.strip() for ln in block.splitlines())
                 if s and not s.startswith("--") and not s.startswith("psql") and s != "EOF"]
        for stmt in " ".join(lines).split(";"):
            stmt = stmt.strip()
            if stmt and not re.match(r"(?i)(CREATE\s+(DATABASE|ROLE|USER)\b|USE\s)", stmt):
                out.append(stmt)
    if not any(re.match(r"(?i)CREATE TABLE\s+`?salt_events", s) for s in out):
        raise RuntimeError(f"{module.__name__}: no salt_events DDL found in its docstring")
    return out


def publish_load(jid: str) -> dict:
    """A job's publish load as the master passes it to save_load (~400 B as JSON)."""
    return {
        "fun": "state.apply", "arg": ["webserver", {"test": False, "__kwarg__": True}],
        "tgt": "web*", "tgt_type": "glob", "ret": "", "jid": jid, "user": "root",
        "to": 60, "kwargs": {"show_timeout": True, "show_jid": False, "delimiter": ":",
                             "cli": True, "batch": None, "metadata": {}},
        "_stamp": bl.stamp(),
    }


def copy_escape(s: str) -> str:
    """A value for PostgreSQL's COPY text format / MariaDB's LOAD DATA defaults."""
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# ---------------------------------------------------------------------------------------------
# servers: one small function per server. Each returns a dict of connection facts:
#   kind, origin, throwaway, host, port, user, password (what the returners use), admin_user,
#   admin_password (creates databases, reads server counters), tls, ca, stop (callable|None)


def load_fixture(args, name):
    """tests/fixtures/<name>.py as a module, or None while it is not in the tree."""
    path = os.path.join(args.fixtures_dir, f"{name}.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location(f"_bench_fixture_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fixture_start(mod, directory):
    """mod.start(dir), asking for durable settings where start() takes `durable`."""
    params = inspect.signature(mod.start).parameters
    if "durable" in params:
        return mod.start(directory, durable=True)
    return mod.start(directory)


def start_postgres(args, base):
    if args.pg_dsn:
        return pg_from_dsn(args.pg_dsn, "--pg-dsn")
    mod = load_fixture(args, "postgres_server")
    if mod is None:
        print("  WARNING: tests/fixtures/postgres_server.py is not in this tree yet: using the "
              f"machine's PostgreSQL ({FALLBACK_PG_DSN}), NOT a throwaway server", flush=True)
        return pg_from_dsn(FALLBACK_PG_DSN, "machine service (fallback, no fixture module)")
    directory = os.path.join(base, "postgres-server")
    info = fixture_start(mod, directory)
    tls = bool(info.get("ca")) and not args.no_tls
    # The fixture's info dict -> the facts this script uses (adapt here if the fields change).
    return {
        "kind": "postgres", "origin": "throwaway (tests/fixtures/postgres_server.py)",
        "throwaway": True, "host": info.get("host", "127.0.0.1"), "port": int(info["port"]),
        "user": info["user"], "password": info.get("password", ""),
        "admin_user": info["superuser"],
        "admin_password": info.get("superuser_password", info.get("password", "")),
        "ca": info.get("ca"), "tls": tls, "sslmode": "verify-full" if tls else "disable",
        "stop": lambda: mod.stop(directory),
    }


def pg_from_dsn(dsn, origin):
    from psycopg2.extensions import parse_dsn  # noqa: PLC0415

    p = parse_dsn(dsn)
    sslmode = p.get("sslmode", "disable")  # every client the same way, not libpq's "prefer"
    return {
        "kind": "postgres", "origin": origin, "throwaway": False,
        "host": p.get("host", "127.0.0.1"), "port": int(p.get("port", 5432)),
        "user": p.get("user", "postgres"), "password": p.get("password", ""),
        "admin_user": p.get("user", "postgres"), "admin_password": p.get("password", ""),
        "ca": p.get("sslrootcert"), "tls": sslmode in ("require", "verify-ca", "verify-full"),
        "sslmode": sslmode, "stop": None,
    }


def start_mysql(args, base):
    if args.mysql_host:
        return {
            "kind": "mysql", "origin": "--mysql-host", "throwaway": False,
            "host": args.mysql_host, "port": args.mysql_port, "user": args.mysql_user,
            "password": args.mysql_password, "admin_user": args.mysql_user,
            "admin_password": args.mysql_password, "ca": args.mysql_ssl_ca,
            "tls": bool(args.mysql_ssl_ca) and not args.no_tls, "stop": None,
        }
    mod = load_fixture(args, "mysql_server")
    if mod is None:
        fb = FALLBACK_MYSQL
        print("  WARNING: tests/fixtures/mysql_server.py is not in this tree yet: using the "
              f"machine's MariaDB ({fb['user']}@{fb['host']}:{fb['port']}), NOT a throwaway "
              "server", flush=True)
        return {"kind": "mysql", "origin": "machine service (fallback, no fixture module)",
                "throwaway": False, "host": fb["host"], "port": fb["port"], "user": fb["user"],
                "password": fb["password"], "admin_user": fb["user"],
                "admin_password": fb["password"], "ca": None, "tls": False, "stop": None}
    directory = os.path.join(base, "mysql-server")
    info = fixture_start(mod, directory)
    # The fixture's info dict -> the facts this script uses (adapt here if the fields change).
    return {
        "kind": "mysql", "origin": "throwaway (tests/fixtures/mysql_server.py)",
        "throwaway": True, "host": info.get("host", "127.0.0.1"), "port": int(info["port"]),
        "user": info["user"], "password": info.get("password", ""),
        "admin_user": info["superuser"],
        "admin_password": info.get("superuser_password", info.get("password", "")),
        "ca": info.get("ca"), "tls": bool(info.get("ca")) and not args.no_tls,
        "stop": lambda: mod.stop(directory),
    }


# ---------------------------------------------------------------------------------------------
# database access of the benchmark itself (not timed): databases, tables, counters


class PgServer:
    """Admin side of a PostgreSQL server: databases, truncation, row counts, counters."""

    kind = "postgres"
    global_counter = False  # connections are counted per database

    def __init__(self, srv):
        import psycopg2  # noqa: PLC0415

        self.psycopg2 = psycopg2
        self.srv = srv
        self.admin = self.connect("postgres", admin=True)
        self.db_conns = {}  # db -> persistent admin connection to it (counts, truncation)
        self.my_pids = {self.admin.get_backend_pid()}
        self.dbs = []

    def connect(self, db, admin=False, autocommit=True):
        s = self.srv
        kw = {"host": s["host"], "port": s["port"], "dbname": db,
              "user": s["admin_user"] if admin else s["user"],
              "password": s["admin_password"] if admin else s["password"],
              "connect_timeout": 10}
        kw["sslmode"] = s["sslmode"]
        if s["tls"] and s["ca"]:
            kw["sslrootcert"] = s["ca"]
        conn = self.psycopg2.connect(**kw)
        conn.autocommit = autocommit
        return conn

    def query(self, sql, params=None, db=None):
        cur = (self.db_conns[db] if db else self.admin).cursor()
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None

    def version(self):
        return self.query("SHOW server_version")[0][0]

    def durability(self, enforce):
        names = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")

        def read():
            return {n: self.query(f"SHOW {n}")[0][0] for n in names}

        def ok(v):
            return (v["fsync"] == "on" and v["full_page_writes"] == "on"
                    and v["synchronous_commit"] in ("on", "local", "remote_write", "remote_apply"))

        vals = read()
        if not ok(vals) and enforce:
            for n in ("fsync", "full_page_writes", "synchronous_commit"):
                self.query(f"ALTER SYSTEM SET {n} = on")
            self.query("SELECT pg_reload_conf()")
            for _ in range(50):
                time.sleep(0.1)
                vals = read()
                if ok(vals):
                    break
            vals["changed_by_benchmark"] = True
        vals["durable"] = ok(vals)
        return vals

    def create_db(self, name):
        owner = self.srv["user"]
        if owner != self.srv["admin_user"]:
            self.query(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        else:
            self.query(f'CREATE DATABASE "{name}"')
        self.dbs.append(name)
        conn = self.connect(name, admin=True)
        conn.cursor().execute("SET lock_timeout = '30s'")
        self.db_conns[name] = conn
        self.my_pids.add(conn.get_backend_pid())

    def run_ddl(self, db, statements):
        conn = self.connect(db)  # as the returners' user: it owns the tables
        try:
            cur = conn.cursor()
            for stmt in statements:
                cur.execute(stmt)
        finally:
            conn.close()

    def tables(self, db):
        rows = self.query("SELECT table_name FROM information_schema.tables WHERE "
                          "table_schema = current_schema() AND table_name = ANY(%s)",
                          (list(TABLES),), db=db)
        return sorted(r[0] for r in rows)

    def columns(self, db, table):
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE "
                          "table_schema = current_schema() AND table_name = %s", (table,), db=db)
        return {r[0] for r in rows}

    def truncate(self, db):
        tables = self.tables(db)
        if tables:
            self.query(f"TRUNCATE {', '.join(tables)}", db=db)

    def count(self, db, table):
        return self.query(f"SELECT count(*) FROM {table}", db=db)[0][0]

    def has_jid(self, db, jid):
        return self.query("SELECT count(*) FROM jids WHERE jid = %s", (jid,), db=db)[0][0] > 0

    def conn_counter(self, db):
        """Sessions ever established to database `db` (pg_stat_database.sessions)."""
        time.sleep(0.2)  # a backend reports its session to the statistics within moments
        self.query("SELECT pg_stat_clear_snapshot()")
        return self.query("SELECT sessions FROM pg_stat_database WHERE datname = %s", (db,))[0][0]

    def open_conns(self, db):
        return self.query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                          "NOT (pid = ANY(%s))", (db, list(self.my_pids)))[0][0]

    def counter_scope(self):
        return "sessions established to the returner's own database (pg_stat_database)"

    def drop_all(self):
        for conn in self.db_conns.values():
            conn.close()
        for db in self.dbs:
            try:
                self.query(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                print(f"  (could not drop database {db}: {exc})")
        self.admin.close()


class MyServer:
    """Admin side of a MariaDB/MySQL server."""

    kind = "mysql"
    global_counter = True  # one 'Connections' counter for the whole server

    def __init__(self, srv):
        import MySQLdb  # noqa: PLC0415

        self.MySQLdb = MySQLdb
        self.srv = srv
        self.admin = self.connect(None, admin=True)
        self.query("SET SESSION lock_wait_timeout = 30")
        self.my_ids = {self.query("SELECT CONNECTION_ID()")[0][0]}
        self.dbs = []
        self.created_user = None
        if not srv["password"]:
            # saltext-mysql's returner takes an empty mysql.pass for "not set" and sends its
            # default password ("salt"): the returners get a user of their own, with one.
            name, password = f"ft_bench{os.getpid()}", secrets.token_hex(16)
            self.query("CREATE USER %s@'%%' IDENTIFIED BY %s", (name, password))
            self.created_user = name
            srv["user"], srv["password"] = name, password

    def connect(self, db, admin=False, local_infile=False):
        s = self.srv
        kw = {"host": s["host"], "port": int(s["port"]),
              "user": s["admin_user"] if admin else s["user"],
              "passwd": s["admin_password"] if admin else s["password"],
              "connect_timeout": 10, "charset": "utf8mb4"}
        if db:
            kw["db"] = db
        if s["tls"] and s["ca"]:
            kw["ssl"] = {"ca": s["ca"]}
        if local_infile:
            kw["local_infile"] = 1
        conn = self.MySQLdb.connect(**kw)
        conn.autocommit(admin)
        return conn

    def query(self, sql, params=None, db=None):  # noqa: ARG002 - same signature as PgServer
        cur = self.admin.cursor()
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else None
        cur.close()
        return rows

    def version(self):
        return self.query("SELECT VERSION()")[0][0]

    def durability(self, enforce):
        def var(name):
            rows = self.query("SHOW GLOBAL VARIABLES LIKE %s", (name,))
            return rows[0][1] if rows else None

        def read():
            return {n: var(n) for n in ("innodb_flush_log_at_trx_commit", "innodb_doublewrite",
                                        "log_bin", "sync_binlog")}

        def ok(v):
            binlog_ok = v["log_bin"] != "ON" or v["sync_binlog"] == "1"
            return (v["innodb_flush_log_at_trx_commit"] == "1"
                    and v["innodb_doublewrite"] in ("ON", "1") and binlog_ok)

        vals = read()
        if not ok(vals) and enforce:
            for stmt in ("SET GLOBAL innodb_flush_log_at_trx_commit = 1",
                         "SET GLOBAL sync_binlog = 1", "SET GLOBAL innodb_doublewrite = ON"):
                try:
                    self.query(stmt)
                except self.MySQLdb.Error:
                    pass  # innodb_doublewrite is read-only before MariaDB 11
            vals = read()
            vals["changed_by_benchmark"] = True
        vals["durable"] = ok(vals)
        return vals

    def create_db(self, name):
        self.query(f"CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4")
        self.dbs.append(name)
        user = self.srv["user"]
        if user != self.srv["admin_user"]:
            for (host,) in self.query("SELECT Host FROM mysql.user WHERE User = %s", (user,)):
                self.query(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@%s", (user, host))

    def run_ddl(self, db, statements):
        conn = self.connect(db)
        try:
            cur = conn.cursor()
            for stmt in statements:
                cur.execute(stmt)
            conn.commit()
        finally:
            conn.close()

    def tables(self, db):
        rows = self.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                          "TABLE_SCHEMA = %s", (db,))
        return sorted(r[0] for r in rows if r[0] in TABLES)

    def columns(self, db, table):
        rows = self.query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
                          "TABLE_SCHEMA = %s AND TABLE_NAME = %s", (db, table))
        return {r[0] for r in rows}

    def truncate(self, db):
        for t in self.tables(db):
            try:
                self.query(f"TRUNCATE TABLE `{db}`.`{t}`")
            except self.MySQLdb.OperationalError:
                self.query(f"DELETE FROM `{db}`.`{t}`")  # a metadata lock held elsewhere

    def count(self, db, table):
        return self.query(f"SELECT COUNT(*) FROM `{db}`.`{table}`")[0][0]

    def has_jid(self, db, jid):
        return self.query(f"SELECT COUNT(*) FROM `{db}`.`jids` WHERE jid = %s", (jid,))[0][0] > 0

    def conn_counter(self, db):  # noqa: ARG002 - the server has one counter for all
        return int(self.query("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])

    def open_conns(self, db):
        ids = list(self.my_ids)
        marks = ",".join(["%s"] * len(ids))
        return self.query("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
                          f"AND ID NOT IN ({marks})", (db, *ids))[0][0]

    def counter_scope(self):
        return ("server-wide 'Connections' delta while only this returner runs (another "
                "client of a shared server would add to it)")

    def drop_all(self):
        for db in self.dbs:
            try:
                self.query(f"DROP DATABASE IF EXISTS `{db}`")
            except Exception as exc:  # noqa: BLE001
                print(f"  (could not drop database {db}: {exc})")
        if self.created_user:
            self.query("DROP USER IF EXISTS %s@'%%'", (self.created_user,))
        self.admin.close()


# ---------------------------------------------------------------------------------------------
# the physical reference: the server's own bulk path for the same event rows


def reference_rows(n, jidgen, master_id, with_record_id):
    """n event rows (tag, data JSON, master_id, alter_time[, record_id]) in COPY text format."""
    out = []
    t = time.time()
    for i in range(n):
        if i % EVENT_BATCH == 0:
            jid = jidgen()
        ev = bl.job_ret_event(jid, MINIONS[i % len(MINIONS)])
        ts = t + i * 1e-6
        when = bl.utc_stamp(ts, " ")
        fields = [ev["tag"], json.dumps(ev["data"]), master_id, when]
        if with_record_id:
            fields.append(uuid.uuid4().hex)
        out.append("\t".join(copy_escape(f) for f in fields))
    return "\n".join(out) + "\n"


class PgCopy:
    """COPY salt_events (...) FROM STDIN through psycopg2's copy_expert, one commit each."""

    def __init__(self, server: PgServer, db):
        self.server, self.db = server, db
        self.conn = server.connect(db, autocommit=False)
        server.my_pids.add(self.conn.get_backend_pid())  # not a returner's connection
        self.method = "COPY FROM STDIN"

    def prepare(self):
        self.with_record_id = "record_id" in self.server.columns(self.db, "salt_events")
        cols = "tag, data, master_id, alter_time" + (", record_id" if self.with_record_id else "")
        self.sql = f"COPY salt_events ({cols}) FROM STDIN"

    def load(self, text):
        import io  # noqa: PLC0415

        cur = self.conn.cursor()
        cur.copy_expert(self.sql, io.StringIO(text))
        self.conn.commit()

    def close(self):
        self.conn.close()


class MyLoad:
    """LOAD DATA LOCAL INFILE into salt_events, one commit each; a multi-row INSERT of the same
    rows if the server or the client refuses LOCAL INFILE."""

    def __init__(self, server: MyServer, db, tmpdir):
        self.server, self.db = server, db
        self.conn = server.connect(db, local_infile=True)
        server.my_ids.add(self.conn.thread_id())  # not a returner's connection
        self.path = os.path.join(tmpdir, f"load-{db}.tsv")
        self.method = "LOAD DATA LOCAL INFILE"

    def prepare(self):
        self.with_record_id = "record_id" in self.server.columns(self.db, "salt_events")
        self.cols = ["tag", "data", "master_id", "alter_time"] + (
            ["record_id"] if self.with_record_id else [])

    def load(self, text):
        if self.method.startswith("LOAD"):
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(text)
            cur = self.conn.cursor()
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE salt_events CHARACTER SET utf8mb4 "
                    f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                    f"({', '.join(self.cols)})", (self.path,))
                self.conn.commit()
                return
            except self.server.MySQLdb.Error as exc:
                self.conn.rollback()
                self.method = f"multi-row INSERT (LOAD DATA LOCAL INFILE refused: {exc.args[-1]})"
        rows = [[f.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")
                 for f in line.split("\t")] for line in text.splitlines()]
        cur = self.conn.cursor()
        cur.executemany(f"INSERT INTO salt_events ({', '.join(self.cols)}) VALUES "
                        f"({', '.join(['%s'] * len(self.cols))})", rows)
        self.conn.commit()

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# cases: one returner (or reference) in one section. A case resets its database, runs timed,
# then counts rows and connections.


class Case:
    def __init__(self, name, server, db, *, module=None, fastret=False, reference=None,
                 unavailable=None):
        self.name = name
        self.server = server  # PgServer | MyServer
        self.db = db
        self.module = module  # returner module name in salt.loader.returners
        self.fastret = fastret
        self.reference = reference  # PgCopy | MyLoad
        self.unavailable = unavailable  # reason this case cannot run, or None
        self.kind = server.kind if server else None
        self.at_load = None  # connections opened while the loader loaded the returners


def run_case(case, rets, section, ctx):
    """Runs one case once: reset, timed work, checks. Never raises: a failure is a result."""
    server = case.server
    mark = ERRORS.mark()
    try:
        server.truncate(case.db)
        c0 = None if case.reference else server.conn_counter(case.db)
        if section == "events":
            res = (time_reference(case, ctx) if case.reference
                   else time_events(case, rets, ctx))
            table = "salt_events"
        elif section == "returner":
            res = time_returner(case, rets, ctx)
            table = "salt_returns"
        else:
            res = time_save_load(case, rets, ctx)
            table = "jids"
        c1 = None if case.reference else server.conn_counter(case.db)
        res["rows"] = server.count(case.db, table)
        res["table"] = table
        res["conn_opened"] = None if case.reference else c1 - c0
        res["conn_open_after"] = None if case.reference else server.open_conns(case.db)
    except Exception as exc:  # noqa: BLE001 - reported as a failed case
        res = {"name": case.name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
               "rate": 0.0}
    res["name"] = case.name
    res["rows_ok"] = "error" not in res and res["rows"] == res["submitted"]
    res["errors_logged"] = ERRORS.since(mark)[:3]
    return res


def make_batches(n, jidgen):
    return bl.event_batches(n, jidgen, MINIONS, EVENT_BATCH)


def flush_fastret(name):
    import fastret  # noqa: PLC0415

    nat = fastret.native()
    if not nat.flush(120.0):
        raise RuntimeError(f"{name}: flush timed out: {nat.stats()}")


def time_events(case, rets, ctx):
    fn = rets[f"{case.module}.event_return"]
    submitted = 0

    def call_batches(batches):
        nonlocal submitted
        for batch in batches:
            fn(batch)
            submitted += len(batch)
            batch.clear()  # what Salt's EventReturn does after the call
        if case.fastret:
            flush_fastret(case.name)

    call_batches(make_batches(2, ctx["jidgen"]))  # warm-up: connection, schema, caches
    probe = make_batches(2, ctx["jidgen"])
    t0 = time.perf_counter()
    call_batches(probe)
    per_batch = (time.perf_counter() - t0) / 2
    # fastret: bench_foundation's chunk (100 batches, then the flush). A stock returner's calls
    # are independent of the chunk size: its chunk is sized to fit min_time.
    per_chunk = MAX_BATCHES_PER_CHUNK if case.fastret else int(
        max(1, min(MAX_BATCHES_PER_CHUNK, ctx["min_time"] / 2 / max(per_batch, 1e-6))))
    events = 0
    elapsed = flush_s = 0.0
    while elapsed < ctx["min_time"]:
        batches = make_batches(per_chunk, ctx["jidgen"])
        gc.collect()
        t0 = time.perf_counter()
        for batch in batches:
            fn(batch)
            batch.clear()
        t1 = time.perf_counter()
        if case.fastret:
            flush_fastret(case.name)
        t2 = time.perf_counter()
        elapsed += t2 - t0
        flush_s += t2 - t1
        events += EVENT_BATCH * per_chunk
    submitted += events
    return {"events": events, "seconds": elapsed, "rate": events / elapsed,
            "flush_seconds": flush_s, "batches_per_chunk": per_chunk, "submitted": submitted}


def time_reference(case, ctx):
    ref = case.reference
    ref.prepare()
    master_id = ctx["master_id"]
    ref.load(reference_rows(EVENT_BATCH, ctx["jidgen"], master_id, ref.with_record_id))  # warm-up
    submitted = EVENT_BATCH
    rows = 0
    elapsed = 0.0
    while elapsed < ctx["min_time"]:
        text = reference_rows(REF_ROWS, ctx["jidgen"], master_id, ref.with_record_id)
        gc.collect()
        t0 = time.perf_counter()
        ref.load(text)
        elapsed += time.perf_counter() - t0
        rows += REF_ROWS
    submitted += rows
    return {"events": rows, "seconds": elapsed, "rate": rows / elapsed, "flush_seconds": 0.0,
            "submitted": submitted, "method": ref.method, "rows_per_statement": REF_ROWS}


def time_returner(case, rets, ctx):
    fn = rets[f"{case.module}.returner"]
    jidgen = ctx["jidgen"]
    submitted = 0

    def work(n):
        out = []
        while len(out) < n:
            jid = jidgen()
            out.extend(bl.state_apply_return(jid, m) for m in MINIONS[:n - len(out)])
        return out

    for ret in work(5):  # warm-up
        fn(ret)
    submitted += 5
    probe = work(10)
    t0 = time.perf_counter()
    for ret in probe:
        fn(ret)
    per_call = (time.perf_counter() - t0) / 10
    submitted += 10
    chunk = int(max(10, min(500, ctx["min_time"] / 4 / max(per_call, 1e-6))))
    calls = 0
    elapsed = 0.0
    while elapsed < ctx["min_time"]:
        rets_ = work(chunk)
        gc.collect()
        t0 = time.perf_counter()
        for ret in rets_:
            fn(ret)
        elapsed += time.perf_counter() - t0
        calls += len(rets_)
    submitted += calls
    return {"calls": calls, "seconds": elapsed, "rate": calls / elapsed, "submitted": submitted,
            "ret_bytes": len(json.dumps(bl.state_apply_return(jidgen(), MINIONS[0])))}


def time_save_load(case, rets, ctx):
    fn = rets[f"{case.module}.save_load"]
    jidgen = ctx["jidgen"]
    for _ in range(3):  # warm-up
        jid = jidgen()
        fn(jid, publish_load(jid), minions=list(MINIONS))
    lat = []
    visible = 0
    for _ in range(ctx["save_load_calls"]):
        jid = jidgen()
        load = publish_load(jid)
        minions = list(MINIONS)
        t0 = time.perf_counter()
        fn(jid, load, minions=minions)
        lat.append(time.perf_counter() - t0)
        # untimed: Salt's CLI reads the load right after publishing, so it must be there now
        visible += case.server.has_jid(case.db, jid)
    return {"calls": len(lat), "seconds": sum(lat), "rate": len(lat) / sum(lat),
            "latencies": lat, "median": statistics.median(lat), "p95": percentile(lat, 0.95),
            "visible_on_return": visible, "submitted": len(lat) + 3}


# ---------------------------------------------------------------------------------------------
# rounds


def describe(section, res):
    if "error" in res:
        return f"FAILED: {res['error']}"
    if section == "events":
        what = (f"{res['events']} rows, {res['seconds']:.2f}s, {res['method']}"
                if "method" in res else
                f"{res['events']} events, {res['seconds']:.2f}s, of which flush "
                f"{res['flush_seconds']:.2f}s")
    elif section == "returner":
        what = f"{res['calls']} calls, {res['seconds']:.2f}s"
    else:
        what = (f"{res['calls']} calls, median {fmt_ms(res['median'])}, "
                f"p95 {fmt_ms(res['p95'])}, in the database on return: "
                f"{res['visible_on_return']}/{res['calls']}")
    rows = f"rows {res['rows']}/{res['submitted']}" + ("" if res["rows_ok"] else " MISMATCH")
    conns = ("" if res.get("conn_opened") is None else
             f", connections +{res['conn_opened']} (open after: {res['conn_open_after']})")
    return f"{what}; {rows}{conns}"


def run_section(cases, rets, section, rounds, ctx):
    """Every case once per round, cases interleaved (a burst of load from other processes hits
    all of them alike); a case's rate is the median over the rounds."""
    runs = {c.name: [] for c in cases}
    for rnd in range(rounds):
        if rounds > 1:
            print(f"  round {rnd + 1}/{rounds}", flush=True)
        for c in cases:
            if c.unavailable:
                if rnd == 0:
                    print(f"    {c.name:46s} {'-':>12s}  ({c.unavailable})", flush=True)
                continue
            res = run_case(c, rets, section, ctx)
            runs[c.name].append(res)
            print(f"    {c.name:46s} {bl.fmt_rate(res['rate']):>12s}  ({describe(section, res)})",
                  flush=True)
            if not res["rows_ok"] and res["errors_logged"]:
                print(f"      first error logged: {res['errors_logged'][0]}", flush=True)
    rows = []
    for c in cases:
        row = {"name": c.name, "server": c.server.kind if c.server else None,
               "reference": bool(c.reference), "fastret": c.fastret}
        if c.unavailable:
            row.update(unavailable=c.unavailable, rate=None)
            rows.append(row)
            continue
        rs = runs[c.name]
        ok = [r for r in rs if "error" not in r]
        rates = [r["rate"] for r in ok]
        row.update(
            rate=statistics.median(rates) if rates and len(ok) == len(rs) else None,
            rates=[r["rate"] for r in rs], errors=[r["error"] for r in rs if "error" in r],
            rows_ok=all(r["rows_ok"] for r in rs),
            rows=[(r.get("rows"), r.get("submitted")) for r in rs],
            conn_opened=sum(r.get("conn_opened") or 0 for r in rs),
            conn_open_after=max((r.get("conn_open_after") or 0 for r in rs), default=0),
            errors_logged=[e for r in rs for e in r["errors_logged"]][:5])
        for key in ("method", "rows_per_statement", "batches_per_chunk", "ret_bytes"):
            if ok and key in ok[-1]:
                row[key] = ok[-1][key]
        for key in ("events", "calls", "seconds", "flush_seconds"):
            if ok and key in ok[0]:
                row[key] = sum(r[key] for r in ok)
        if section == "save_load" and ok:
            lat = [x for r in ok for x in r["latencies"]]
            row.update(median=statistics.median(lat), p95=percentile(lat, 0.95),
                       calls=len(lat), visible_on_return=sum(r["visible_on_return"] for r in ok))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# set-up


def fastret_block(kind, srv, db, known_options):
    """fastret_postgres / fastret_mysql options for a server; only keys this build knows are
    kept (when it knows the sink type at all)."""
    if kind == "postgres":
        block = {"host": srv["host"], "port": srv["port"], "db": db, "user": srv["user"],
                 "pass": srv["password"], "sslmode": srv["sslmode"]}
        if srv["tls"] and srv["ca"]:
            block["sslrootcert"] = srv["ca"]
    else:
        block = {"host": srv["host"], "port": srv["port"], "db": db, "user": srv["user"],
                 "pass": srv["password"]}
        if srv["tls"] and srv["ca"]:
            block["ssl_ca"] = srv["ca"]
        elif known_options is not None and "ssl_mode" in known_options:
            block["ssl_mode"] = "disabled"  # the server offers no TLS
    if known_options is not None:
        block = {k: v for k, v in block.items() if k in known_options}
    return block


def sink_type_options():
    """{sink type: set of option keys} of the installed fastret."""
    import fastret  # noqa: PLC0415

    nat = fastret.native()
    common = {o["key"] for o in nat.common_options()}
    return {t["type"]: {o["key"] for o in t["options"]} | common for t in nat.sink_types()}


def setup(args, base, results):
    """Starts/attaches the servers, creates one database per returner and reference, writes
    the master config and loads every returner through salt.loader.returners."""
    import salt.returners.pgjsonb  # noqa: PLC0415
    import salt.returners.postgres  # noqa: PLC0415

    types = sink_type_options()
    results["env"]["fastret_sink_types"] = sorted(types)
    prefix = f"ft_bench{os.getpid()}"
    servers = {}
    conf = {}
    plan = []  # (kind, case name, db, module, fastret, reference class)
    if "postgres" not in args.skip:
        plan += [("postgres", "pgjsonb (stock)", "pgjsonb", "pgjsonb", False, None),
                 ("postgres", "postgres (stock)", "postgres", "postgres", False, None),
                 ("postgres", "fastret_postgres", "fastret", "fastret_postgres", True, None),
                 ("postgres", "reference: COPY, pgjsonb schema", "copy_stock", None, False,
                  "stock"),
                 ("postgres", "reference: COPY, fastret schema", "fastret", None, False,
                  "fastret")]
    if "mysql" not in args.skip:
        plan += [("mysql", "mysql (stock, saltext-mysql)", "mysql", "mysql", False, None),
                 ("mysql", "fastret_mysql", "fastret", "fastret_mysql", True, None),
                 ("mysql", "reference: LOAD DATA, mysql schema", "load_stock", None, False,
                  "stock"),
                 ("mysql", "reference: LOAD DATA, fastret schema", "fastret", None, False,
                  "fastret")]

    for kind, start in (("postgres", start_postgres), ("mysql", start_mysql)):
        if kind in args.skip:
            continue
        print(f"  starting {kind} ...", flush=True)
        t0 = time.perf_counter()
        try:
            srv = start(args, base)
            server = (PgServer if kind == "postgres" else MyServer)(srv)
        except Exception as exc:  # noqa: BLE001 - its rows become "server unavailable"
            print(f"  {kind}: server unavailable: {exc}", flush=True)
            results["servers"][kind] = {"unavailable": str(exc)}
            servers[kind] = None
            continue
        servers[kind] = server
        dur = server.durability(enforce=srv["throwaway"])
        info = {**redact(srv), "version": server.version(), "durability": dur,
                "start_seconds": time.perf_counter() - t0,
                "connection_counter": server.counter_scope()}
        results["servers"][kind] = info
        settings = ", ".join(f"{k}={v}" for k, v in dur.items()
                             if k not in ("durable", "changed_by_benchmark"))
        print(f"  {kind} {info['version']} at {srv['host']}:{srv['port']}: {srv['origin']}; "
              f"{'TLS (verified, CA ' + str(srv['ca']) + ')' if srv['tls'] else 'no TLS'}",
              flush=True)
        print(f"    durable settings: {settings} -> "
              f"{'DURABLE' if dur['durable'] else 'NOT DURABLE (results overstate the server)'}"
              f"{' (set by the benchmark)' if dur.get('changed_by_benchmark') else ''}",
              flush=True)
        if kind == "postgres":
            # Salt's postgres returner has no TLS options: libpq takes them from the
            # environment (pgjsonb gets them as options too).
            os.environ["PGSSLMODE"] = srv["sslmode"]
            if srv["tls"] and srv["ca"]:
                os.environ["PGSSLROOTCERT"] = srv["ca"]

    # databases, stock schemas, returner options
    import saltext.mysql.returners.mysql as stock_mysql  # noqa: PLC0415

    ddl = {"pgjsonb": stock_ddl(salt.returners.pgjsonb),
           "postgres": stock_ddl(salt.returners.postgres),
           "copy_stock": stock_ddl(salt.returners.pgjsonb),
           "mysql": stock_ddl(stock_mysql), "load_stock": stock_ddl(stock_mysql)}
    made = set()
    for kind, _name, dbkey, module, _fr, _ref in plan:
        server = servers.get(kind)
        if server is None or (kind, dbkey) in made:
            continue
        db = f"{prefix}_{dbkey}"
        server.create_db(db)
        made.add((kind, dbkey))
        if dbkey in ddl:
            server.run_ddl(db, ddl[dbkey])
        srv = server.srv
        if module == "pgjsonb":
            conf.update({"returner.pgjsonb.host": srv["host"], "returner.pgjsonb.port": srv["port"],
                         "returner.pgjsonb.user": srv["user"],
                         "returner.pgjsonb.pass": srv["password"], "returner.pgjsonb.db": db})
            conf["returner.pgjsonb.sslmode"] = srv["sslmode"]
            if srv["tls"] and srv["ca"]:
                conf["returner.pgjsonb.sslrootcert"] = srv["ca"]
        elif module == "postgres":
            conf.update({"returner.postgres.host": srv["host"],
                         "returner.postgres.port": srv["port"],
                         "returner.postgres.user": srv["user"],
                         "returner.postgres.passwd": srv["password"],
                         "returner.postgres.db": db})
        elif module == "mysql":
            conf.update({"mysql.host": srv["host"], "mysql.port": srv["port"],
                         "mysql.user": srv["user"], "mysql.pass": srv["password"], "mysql.db": db})
            if srv["tls"] and srv["ca"]:
                conf["mysql.ssl_ca"] = srv["ca"]
        elif module in ("fastret_postgres", "fastret_mysql"):
            conf[module] = fastret_block(kind, srv, db, types.get(kind))

    # Reference connections are opened now, before any counter is read: they never count as a
    # returner's connections.
    refs = {}
    for kind, name, dbkey, _module, _fr, ref in plan:
        server = servers.get(kind)
        if ref and server is not None:
            db = f"{prefix}_{dbkey}"
            refs[name] = (PgCopy(server, db) if kind == "postgres"
                          else MyLoad(server, db, base))

    cfg = bl.write_master_config(base, "master", conf)
    before = {k: {f"{prefix}_{d}": s.conn_counter(f"{prefix}_{d}") for (kk, d) in made if kk == k}
              for k, s in servers.items() if s is not None}
    opts, rets = bl.load_returners(cfg)
    at_load = {}
    for k, s in servers.items():
        if s is not None:
            at_load[k] = {db: s.conn_counter(db) - c for db, c in before[k].items()}
    results["opts"] = {"id": opts.get("id"), "cachedir": opts.get("cachedir")}

    cases = []
    for kind, name, dbkey, module, fr, ref in plan:
        server = servers.get(kind)
        db = f"{prefix}_{dbkey}"
        unavailable = None
        if server is None:
            unavailable = f"{kind} server unavailable"
        elif fr:
            sink = "postgres" if kind == "postgres" else "mysql"
            if sink not in types:
                unavailable = (f"not available in this build: fastret sink types are "
                               f"{', '.join(sorted(types))}")
            elif f"{module}.event_return" not in rets:
                unavailable = f"not loaded: {rets.missing_fun_string(f'{module}.event_return')}"
        elif ref == "fastret":
            fcase = next(c for c in cases if c.fastret and c.server is server)
            if fcase.unavailable:
                unavailable = "needs fastret's own schema: " + fcase.unavailable
        elif module and f"{module}.event_return" not in rets:
            unavailable = f"not loaded: {rets.missing_fun_string(f'{module}.event_return')}"
        case = Case(name, server, db, module=module, fastret=fr,
                    reference=refs.get(name) if not unavailable else None,
                    unavailable=unavailable)
        case.kind = kind
        if module:
            case.at_load = at_load.get(kind, {}).get(db, 0)
            if server is not None and server.global_counter and not fr:
                # A server-wide counter: what opened during loading is fastret's (the stock
                # modules' __virtual__ only imports a client library).
                case.at_load = 0
        cases.append(case)
    return servers, cases, rets, refs


# ---------------------------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed work per case and round (default 1, --quick 0.3)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds; a rate is the median (default 3, --quick 1)")
    ap.add_argument("--save-load-calls", type=int, default=None,
                    help="save_load calls per case and round (default 200, --quick 40)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["events", "returner", "save_load", "postgres", "mysql"],
                    help="skip a section or a server (repeatable)")
    ap.add_argument("--fixtures-dir", default=os.path.join(REPO, "tests", "fixtures"),
                    help="where postgres_server.py and mysql_server.py are (default "
                    "tests/fixtures of this tree)")
    ap.add_argument("--pg-dsn", help="use this PostgreSQL server instead of a throwaway one "
                    "(libpq DSN; the user must be allowed to create databases)")
    ap.add_argument("--mysql-host", help="use this MariaDB/MySQL server instead of a throwaway "
                    "one (the user must be allowed to create databases)")
    ap.add_argument("--mysql-port", type=int, default=3306)
    ap.add_argument("--mysql-user", default="root")
    ap.add_argument("--mysql-password", default="")
    ap.add_argument("--mysql-ssl-ca", help="CA file: connect with TLS (every returner)")
    ap.add_argument("--no-tls", action="store_true",
                    help="plain TCP for every returner even when the server offers TLS")
    args = ap.parse_args()

    # Salt's and fastret's messages would garble the table: kept (ERRORS), never printed.
    logging.basicConfig(level=logging.CRITICAL)
    for h in logging.getLogger().handlers:
        h.setLevel(logging.CRITICAL + 1)
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger().addHandler(ERRORS)

    min_time = args.min_time if args.min_time is not None else (0.3 if args.quick else 1.0)
    rounds = args.rounds or (1 if args.quick else 3)
    sl_calls = args.save_load_calls or (40 if args.quick else 200)

    import salt.version  # noqa: PLC0415

    import fastret  # noqa: PLC0415

    base = tempfile.mkdtemp(prefix="fastret-bench-db-")
    os.chmod(base, 0o755)  # a throwaway server running as another user reaches its directory
    results = {"env": bl.environment(base, quick=args.quick, min_time=min_time, rounds=rounds,
                                     save_load_calls=sl_calls),
               "servers": {}}
    results["env"]["clients"] = client_versions()
    title = (f"fastret {fastret.__version__} database returners vs Salt "
                   f"{salt.version.__version__} stock returners")
    bl.print_environment(title, results["env"], "; clients: " + ", ".join(
        f"{k} {v}" for k, v in results["env"]["clients"].items()))
    servers, refs = {}, {}
    try:
        servers, cases, rets, refs = setup(args, base, results)
        run_all(args, cases, rets, results, min_time, rounds, sl_calls)
    finally:
        bl.write_results(args.json, results)
        cleanup(args, base, servers, refs)
    return 0 if all(t["met"] for t in results.get("targets", [])) and results.get("targets") else 1


def client_versions():
    out = {}
    for dist in ("psycopg2-binary", "saltext.mysql", "mysqlclient", "PyMySQL"):
        try:
            from importlib.metadata import version  # noqa: PLC0415

            out[dist] = version(dist)
        except Exception:  # noqa: BLE001, S112
            continue
    return out


def cleanup(args, base, servers, refs):
    bl.close_fastret()  # first: it holds the databases' connections
    for ref in refs.values():
        try:
            ref.close()
        except Exception:  # noqa: BLE001
            pass
    for server in servers.values():
        if server is None:
            continue
        try:
            server.drop_all()
        except Exception as exc:  # noqa: BLE001
            print(f"  ({server.kind}: cleanup failed: {exc})")
        if server.srv.get("stop"):
            try:
                server.srv["stop"]()
            except Exception as exc:  # noqa: BLE001
                print(f"  ({server.kind}: could not stop the throwaway server: {exc})")
    if args.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


STOCK_BASE = {"postgres": "pgjsonb (stock)", "mysql": "mysql (stock, saltext-mysql)"}
# Preferred first: the bulk load into fastret's own tables when it was measured (the same table
# definition fastret writes into), else into the stock returner's tables.
REFERENCES = {"postgres": ("reference: COPY, fastret schema", "reference: COPY, pgjsonb schema"),
              "mysql": ("reference: LOAD DATA, fastret schema",
                        "reference: LOAD DATA, mysql schema")}


def reference_row(rows, kind):
    return next((r for n in REFERENCES.get(kind, ()) for r in rows
                 if r["name"] == n and r.get("rate")), None)


def vs(rows, name):
    r = next((x for x in rows if x["name"] == name), None)
    return r["rate"] if r and r.get("rate") else None


def ratio(a, b):
    return a / b if a and b else None


def run_all(args, cases, rets, results, min_time, rounds, sl_calls):
    import fastret  # noqa: PLC0415

    ctx = {"jidgen": bl.JidGen(), "min_time": min_time, "save_load_calls": sl_calls,
           "master_id": results["opts"]["id"]}
    returners = [c for c in cases if c.module]  # the returner cases (not the references)
    targets = []

    if "events" not in args.skip:
        print(f"\n[1] event_return() events/s (batches of {EVENT_BATCH} events, >= {min_time}s "
              f"timed per case and round, {rounds} round(s), median; fastret timed until "
              f"delivered; references: {REF_ROWS} rows per statement, one commit each)",
              flush=True)
        rows = run_section(cases, rets, "events", rounds, ctx)
        for r in rows:
            r["vs_stock"] = ratio(r.get("rate"), vs(rows, STOCK_BASE[r["server"]]))
            ref = reference_row(rows, r["server"])
            r["vs_reference"] = ratio(r.get("rate"), ref and ref["rate"])
            r["reference_used"] = ref and ref["name"]
        results["event_return"] = rows
        st = fastret.native().stats()
        results["event_sink_stats"] = st
        mine = [x for x in st if x["name"].startswith(("fastret_postgres", "fastret_mysql"))]
        if mine:
            bad = {x["name"]: x["accepted"] - x["delivered"] for x in mine
                   if x["accepted"] != x["delivered"] or x.get("dropped")}
            print(f"  check: fastret sinks {', '.join(x['name'] for x in mine)}: "
                  f"{sum(x['delivered'] for x in mine)} records delivered, "
                  f"{'none lost or pending' if not bad else f'NOT delivered: {bad}'}", flush=True)
        for kind, fname, need in (("postgres", "fastret_postgres", 20.0),
                                  ("mysql", "fastret_mysql", 10.0)):
            if kind in args.skip:
                continue
            sname = STOCK_BASE[kind]
            fr = next(r for r in rows if r["name"] == fname)
            x = ratio(fr.get("rate"), vs(rows, sname))
            why = fr.get("unavailable") or (fr.get("errors") or [None])[0]
            targets.append({"name": f"event_return: {fname} >= {need:.0f}x {sname.split(' ')[0]}",
                            "value": f"{x:.2f}x" if x else f"not measured ({why})",
                            "met": bool(x and x >= need)})
            ref = reference_row(rows, kind)
            y = fr.get("vs_reference")
            targets.append({
                "name": f"event_return: {fname} >= 0.5x {ref['name'] if ref else REFERENCES[kind][0]}",
                "value": f"{y:.2f}x" if y else f"not measured ({why or 'no reference'})",
                "met": bool(y and y >= 0.5)})

    if "returner" not in args.skip:
        print(f"\n[2] returner() calls/s (state.apply return, a new jid per {len(MINIONS)} "
              f"minions, >= {min_time}s timed per case and round, {rounds} round(s), median)",
              flush=True)
        rows = run_section(returners, rets, "returner", rounds, ctx)
        for r in rows:
            r["vs_stock"] = ratio(r.get("rate"), vs(rows, STOCK_BASE[r["server"]]))
        results["returner"] = rows

    if "save_load" not in args.skip:
        print(f"\n[3] save_load() latency ({sl_calls} calls per case and round, a new jid and "
              f"{len(MINIONS)} minions each, {rounds} round(s))", flush=True)
        results["save_load"] = run_section(returners, rets, "save_load", rounds, ctx)

    # connections ------------------------------------------------------------------------------
    conns = []
    for c in returners:
        if c.unavailable:
            conns.append({"name": c.name, "unavailable": c.unavailable})
            continue
        per_section = {}
        for section in ("event_return", "returner", "save_load"):
            row = next((r for r in results.get(section, []) if r["name"] == c.name), None)
            if row and row.get("rate") is not None:
                per_section[section] = row["conn_opened"]
        open_after = max((r.get("conn_open_after") or 0 for s in ("event_return", "returner",
                                                                  "save_load")
                          for r in results.get(s, []) if r["name"] == c.name), default=0)
        total = (c.at_load or 0) + sum(per_section.values())
        conns.append({"name": c.name, "server": c.kind, "at_load": c.at_load,
                      "opened": per_section, "total": total, "max_open_after": open_after,
                      "fastret": c.fastret})
    results["connections"] = conns
    for fname in ("fastret_postgres", "fastret_mysql"):
        c = next((x for x in conns if x["name"] == fname), None)
        if c is None:
            continue
        if "unavailable" in c:
            targets.append({"name": f"connections: {fname} uses one connection per process",
                            "value": f"not measured ({c['unavailable']})", "met": False})
            continue
        targets.append({"name": f"connections: {fname} uses one connection per process",
                        "value": f"{c['total']} opened over the run, at most "
                                 f"{c['max_open_after']} open",
                        "met": c["total"] == 1 and c["max_open_after"] <= 1})

    # checks ------------------------------------------------------------------------------------
    bad = []
    for section in ("event_return", "returner", "save_load"):
        for r in results.get(section, []):
            if r.get("unavailable"):
                continue
            if r.get("errors") or not r.get("rows_ok"):
                bad.append(f"{section}/{r['name']}: " + (r["errors"][0] if r.get("errors") else
                                                         f"rows {r['rows']}"))
    targets.append({"name": "every case's rows arrived in the database (count after each case)",
                    "value": "all rows arrived" if not bad else "; ".join(bad)[:400],
                    "met": not bad})
    srv = {k: v for k, v in results["servers"].items() if "durability" in v}
    targets.append({"name": "servers run with durable settings (fsync on)",
                    "value": ", ".join(f"{k}: {'durable' if v['durability']['durable'] else 'NOT durable'}"
                                       for k, v in srv.items()) or "no server",
                    "met": bool(srv) and all(v["durability"]["durable"] for v in srv.values())})
    results["targets"] = targets
    results["env"]["loadavg_end"] = os.getloadavg()
    print_summary(results)


def print_summary(results):
    print("\n" + "=" * 100)
    print("SUMMARY")
    print("=" * 100)
    for kind, s in results["servers"].items():
        if "unavailable" in s:
            print(f"{kind}: unavailable ({s['unavailable']})")
            continue
        d = s["durability"]
        print(f"{kind} {s['version']}: {s['origin']}; {'TLS' if s['tls'] else 'no TLS'}; "
              f"{'durable' if d['durable'] else 'NOT DURABLE'} ("
              + ", ".join(f"{k}={v}" for k, v in d.items()
                          if k not in ("durable", "changed_by_benchmark")) + ")")
    print("fastret rows use fastret's defaults (write-ahead spool, one transaction per batch); "
          "'reference:' rows are the\nserver's own bulk load of the same rows (no Salt, no "
          "returner), the ceiling of what a returner can reach.")
    if "event_return" in results:
        print(f"{'event_return() events/s (median)':48s} {'rate':>12s} {'vs stock':>10s} "
              f"{'rows':>6s} {'conns':>6s} {'vs ref':>8s}")
        for r in results["event_return"]:
            print(row_line(r) + ("" if r.get("rate") is None else
                                 f" {bl.fmt_ratio(r.get('vs_reference')):>8s}"))
        print("  ('vs ref': the rate over the server's bulk load into fastret's tables, or into "
              "the stock tables\n   when fastret's were not measured)")
        for r in results["event_return"]:
            if r.get("reference") and r.get("method"):
                print(f"  {r['name']}: {r['method']}, {r['rows_per_statement']} rows per "
                      f"statement, one commit each")
    if "returner" in results:
        print(f"{'returner() calls/s (median)':48s} {'rate':>12s} {'vs stock':>10s} "
              f"{'rows':>6s} {'conns':>6s}")
        for r in results["returner"]:
            print(row_line(r))
    if "save_load" in results:
        print(f"{'save_load() latency':48s} {'median':>12s} {'p95':>10s} {'rows':>6s} "
              f"{'conns':>6s} {'on return':>10s}")
        for r in results["save_load"]:
            if r.get("unavailable") or r.get("median") is None:
                print(row_line(r))
                continue
            print(f"  {r['name']:46s} {fmt_ms(r['median']):>12s} {fmt_ms(r['p95']):>10s} "
                  f"{'ok' if r['rows_ok'] else 'BAD':>6s} {r['conn_opened']:>6d} "
                  f"{str(r['visible_on_return']) + '/' + str(r['calls']):>10s}")
    if results.get("connections"):
        print(f"{'connections opened (server counters)':48s} {'at load':>8s} {'events':>7s} "
              f"{'returner':>9s} {'save_load':>10s} {'total':>6s} {'max open':>9s}")
        for c in results["connections"]:
            if "unavailable" in c:
                print(f"  {c['name']:46s} {'-':>8s}  ({c['unavailable'][:60]})")
                continue
            o = c["opened"]
            print(f"  {c['name']:46s} {c['at_load']:>8d} {str(o.get('event_return', '-')):>7s} "
                  f"{str(o.get('returner', '-')):>9s} {str(o.get('save_load', '-')):>10s} "
                  f"{c['total']:>6d} {c['max_open_after']:>9d}")
    print("-" * 100)
    for t in results["targets"]:
        print(f"  [{'MET' if t['met'] else 'NOT MET':7s}] {t['name']}: {t['value']}")


def row_line(r):
    if r.get("unavailable"):
        return f"  {r['name']:46s} {'-':>12s}  {r['unavailable']}"
    if r.get("rate") is None:
        return f"  {r['name']:46s} {'FAILED':>12s}  {(r.get('errors') or ['?'])[0][:80]}"
    conns = "-" if r.get("reference") else str(r["conn_opened"])
    return (f"  {r['name']:46s} {bl.fmt_rate(r['rate']):>12s} "
            f"{bl.fmt_ratio(r.get('vs_stock')):>10s} {'ok' if r['rows_ok'] else 'BAD':>6s} "
            f"{conns:>6s}")


if __name__ == "__main__":
    sys.exit(main())
