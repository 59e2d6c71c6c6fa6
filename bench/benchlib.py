"""Helpers shared by the benchmarks (bench_foundation, bench_databases, bench_network):
formatting, memory and disk use, realistic Salt payloads, Salt set-up under a temporary
root_dir, and the run's environment. Benchmarks, not tests: see bench/README.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# ---------------------------------------------------------------------------------------------
# measuring and formatting


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def dir_bytes(path: str) -> int:
    """Bytes allocated on disk under `path` (like du), and 0 if it does not exist."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def mib(kib_or_bytes: float, unit: str = "B") -> str:
    v = kib_or_bytes * (1024 if unit == "KiB" else 1) / (1024 * 1024)
    return f"{v:.1f} MiB"


class JidGen:
    """Distinct, realistic-looking Salt jids (20 digits: YYYYmmddHHMMSSffffff)."""

    def __init__(self):
        self.base = int(time.strftime("%Y%m%d%H%M%S")) * 1_000_000
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return str(self.base + self.n)


def utc_stamp(t: float | None = None, sep: str = "T") -> str:
    """`t` (default: now) as UTC date and time with microseconds."""
    t = time.time() if t is None else t
    return time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}"


def stamp() -> str:
    return utc_stamp()


# ---------------------------------------------------------------------------------------------
# realistic payloads


def state_apply_return(jid: str, minion: str) -> dict:
    """A job return like the one `state.apply` produces for two states (~1 KB as JSON)."""
    return {
        "id": minion,
        "jid": jid,
        "fun": "state.apply",
        "fun_args": ["webserver"],
        "cmd": "_return",
        "success": True,
        "retcode": 0,
        "out": "highstate",
        "return": {
            "file_|-nginx-conf_|-/etc/nginx/nginx.conf_|-managed": {
                "name": "/etc/nginx/nginx.conf",
                "changes": {"diff": "--- \n+++ \n@@ -1,5 +1,5 @@\n user www-data;\n"
                                    "-worker_processes 2;\n+worker_processes 4;\n"
                                    " pid /run/nginx.pid;\n"
                                    " include /etc/nginx/modules-enabled/*.conf;\n"
                                    " events { worker_connections 768; }\n"},
                "result": True,
                "comment": "File /etc/nginx/nginx.conf updated",
                "__sls__": "webserver",
                "__run_num__": 0,
                "start_time": "12:01:02.345678",
                "duration": 12.345,
                "__id__": "nginx-conf",
            },
            "service_|-nginx_|-nginx_|-running": {
                "name": "nginx",
                "changes": {"nginx": True},
                "result": True,
                "comment": "Service restarted",
                "warnings": ["nginx: the configuration file syntax is ok"],
                "__sls__": "webserver",
                "__run_num__": 1,
                "start_time": "12:01:02.358023",
                "duration": 231.87,
                "__id__": "nginx",
            },
        },
    }


def job_ret_event(jid: str, minion: str) -> dict:
    """An event as Salt's EventReturn hands it over (full=True): tag + data (~500 B as JSON)."""
    return {
        "tag": f"salt/job/{jid}/ret/{minion}",
        "data": {
            "cmd": "_return",
            "id": minion,
            "success": True,
            "return": {"pkg_|-nginx_|-nginx_|-installed": {"result": True, "changes": {},
                                                          "comment": "All specified packages "
                                                                     "are already installed"}},
            "retcode": 0,
            "jid": jid,
            "fun": "state.sls",
            "fun_args": ["webserver", {"test": False}],
            "out": "highstate",
            "_stamp": stamp(),
        },
    }


def event_batches(n: int, jidgen, minions, size: int = 100) -> list:
    """n batches of `size` job return events as EventReturn hands them over, a new jid per
    batch, the minions taken in turn."""
    out = []
    for _ in range(n):
        jid = jidgen()
        out.append([job_ret_event(jid, minions[i % len(minions)]) for i in range(size)])
    return out


# ---------------------------------------------------------------------------------------------
# Salt set-up: a master config under a temporary root_dir, loaded the real way


def write_master_config(base: str, name: str, extra: dict) -> str:
    import salt.utils.yaml  # noqa: PLC0415

    root = os.path.join(base, name)
    os.makedirs(os.path.join(root, "etc", "salt"), exist_ok=True)
    conf = {"root_dir": root, "id": f"bench-master-{name}", "log_level": "quiet"}
    conf.update(extra)
    path = os.path.join(root, "etc", "salt", "master")
    with open(path, "w", encoding="utf-8") as fh:
        salt.utils.yaml.safe_dump(conf, fh, default_flow_style=False)
    return path


def load_returners(config_path: str):
    import salt.config  # noqa: PLC0415
    import salt.loader  # noqa: PLC0415

    opts = salt.config.master_config(config_path)
    os.makedirs(opts["cachedir"], exist_ok=True)
    return opts, salt.loader.returners(opts, {})


def close_fastret(timeout: float = 5.0) -> None:
    """Stops fastret's runtime (before its directories are removed); never raises."""
    try:
        from fastret import pipeline  # noqa: PLC0415

        pipeline.close(timeout)
    except Exception:  # noqa: BLE001
        pass


# ---------------------------------------------------------------------------------------------
# the run's environment


def environment(base: str, **run) -> dict:
    """What a result depends on: versions, machine, the run's parameters (`run`, in order),
    the source tree and the fastret native module in use, the temporary directory."""
    import salt.version  # noqa: PLC0415

    import fastret  # noqa: PLC0415

    native_so = getattr(fastret.native(), "__file__", "")
    try:
        head = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        head = ""
    return {"python": platform.python_version(), "salt": salt.version.__version__,
            "fastret": fastret.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform(), **run,
            "loadavg_start": os.getloadavg(), "source_tree": head,
            "native_module": native_so,
            "native_module_mtime": time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(native_so)))
            if native_so else None,
            "tmpdir": base}


def print_environment(title: str, env: dict, installed_extra: str = "") -> None:
    """The run's header: `title` with versions and machine, the module and tree in use
    (plus `installed_extra`), the load average."""
    print(f"{title}; python {env['python']}, {env['cpus']} CPUs, tmp {env['tmpdir']}"
          f"{' (quick)' if env['quick'] else ''}", flush=True)
    print(f"installed fastret._native built {env['native_module_mtime']}; source tree "
          f"{env['source_tree'] or '?'}{installed_extra}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(other processes on this machine skew the rates)", flush=True)


def write_results(path: str | None, results: dict) -> None:
    """The results as JSON to `path` (nothing without one)."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2, default=str)
        print(f"\nresults written to {path}")
