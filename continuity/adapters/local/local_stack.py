"""The local counterparts of the Azure services: four PostgreSQL clusters and Azurite.

``primary`` holds the tenant databases ("primary region"); ``replica`` streams from it
("secondary region", made with ``pg_basebackup -R``); ``sandbox`` is the isolated restore target
(unix socket only); ``control`` holds the catalog, the evidence index and the devhost's task hub.
Everything lives under the settings' local dir and is idempotent: ``up`` twice does the work once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from continuity.adapters.local import processes
from continuity.adapters.local.processes import live_pid, stop_group
from continuity.adapters.tools import pgbin
from continuity.adapters.tools.barman_cloud import BarmanCloud, tool_dir
from continuity.kernel import settings
from continuity.kernel.errors import ContinuityError, PortInUse, ServerUnavailable, ToolMissing
from continuity.kernel.settings import PROJECT_ROOT, LocalStackSettings

logger = logging.getLogger(__name__)

CLUSTERS = ("primary", "replica", "sandbox", "control")
# The primary's folder in the WAL archive (Barman's "server name") is this prefix and the cluster's system
# identifier: every stack (make run's, the tests', each dedicated one) and every re-initialised cluster gets
# its own folder, so two clusters never write the same segment names into one archive.
ARCHIVE_PREFIX = "primary-"

# Small, fast, and honest settings for a developer machine; the sandbox is tuned for throwaway
# restores (no durability needed: a crash means the scratch database is dropped anyway).
COMMON_CONF = {
    "shared_buffers": "128MB",
    "max_connections": "100",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
    "timezone": "'UTC'",
}
CLUSTER_CONF: dict[str, dict[str, str]] = {
    "primary": {
        "wal_level": "replica",
        "max_wal_senders": "10",
        "max_replication_slots": "10",
        "wal_keep_size": "512MB",
        "hot_standby": "on",
        "cluster_name": "'primary'",
    },
    "replica": {"hot_standby": "on", "cluster_name": "'replica'"},
    "sandbox": {
        "listen_addresses": "''",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "maintenance_work_mem": "512MB",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "30min",
        "autovacuum": "off",
        "cluster_name": "'sandbox'",
    },
    "control": {"cluster_name": "'control'"},
}


@dataclass
class ClusterStatus:
    name: str
    port: int
    running: bool
    healthy: bool
    role: str = "unknown"
    tcp: bool = True
    replication_lag_bytes: int | None = None
    replication_lag_seconds: float | None = None
    detail: str = ""


@dataclass
class StackStatus:
    clusters: list[ClusterStatus] = field(default_factory=list)
    azurite: dict[str, Any] = field(default_factory=dict)
    # Filled by the CLI (continuity.cli.stack), which owns the devhost; empty when only the adapter reported.
    devhost: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return (all(c.healthy for c in self.clusters) and bool(self.azurite.get("healthy"))
                and (not self.devhost or bool(self.devhost.get("healthy"))))

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "clusters": [asdict(c) for c in self.clusters], "azurite": self.azurite,
                "devhost": self.devhost}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalStack:
    """Brings the local clusters and Azurite up and down, and reports their health."""

    def __init__(self, settings: LocalStackSettings | None = None) -> None:
        self.settings = settings or LocalStackSettings.from_env()
        self.base = self.settings.base_dir
        self._bin: Path | None = None
        self._archive_name: str | None = None

    # ---- paths ---------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = pgbin.locate(install=True)
        return self._bin

    @property
    def _pg_link(self) -> Path:
        return self.base / "pg"

    @property
    def pg_root(self) -> Path:
        # Once relocated (see _ensure_traversable) the link still crosses the private parent: the cluster
        # user can only open files by the real path.
        link = self._pg_link
        return link.resolve() if link.is_symlink() else link

    def data_dir(self, name: str) -> Path:
        return self.pg_root / name / "data"

    def log_file(self, name: str) -> Path:
        return self.pg_root / name / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """A directory for the unix sockets, short enough for the 107-byte sun_path limit."""
        preferred = self.base / "run"
        # Relocated clusters (see _ensure_traversable) cannot reach the base dir for their sockets either.
        if len(str(preferred)) + len("/.s.PGSQL.65535.lock") < 100 and not self._pg_link.is_symlink():
            return preferred
        digest = hashlib.sha256(str(self.base).encode()).hexdigest()[:10]
        return Path("/tmp") / f"continuity-{digest}"  # noqa: S108 - sun_path is 107 bytes; owned dir

    @property
    def pgpass(self) -> Path:
        return self.pg_root / "pgpass"

    def port(self, name: str) -> int:
        return int(getattr(self.settings, f"{name}_port"))

    # ---- OS user -------------------------------------------------------------------------
    @property
    def runs_as_root(self) -> bool:
        return os.geteuid() == 0

    def _os_user(self) -> tuple[int, int, str]:
        """uid, gid and name the clusters run as: a dedicated system user when we are root."""
        if not self.runs_as_root:
            entry = pwd.getpwuid(os.geteuid())
            return entry.pw_uid, entry.pw_gid, entry.pw_name
        name = self.settings.os_user
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            # PostgreSQL refuses to run as root; a system user without login owns the data dirs.
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True, capture_output=True, timeout=30,
            )
            entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid, entry.pw_name

    def _pg_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"PGPASSFILE": str(self.pgpass), "LC_ALL": "C", "LANG": "C"})
        return env

    def _run_as_pg(self, args: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        uid, gid, _ = self._os_user()
        kwargs: dict[str, Any] = {}
        if self.runs_as_root:
            kwargs = {"user": uid, "group": gid, "extra_groups": []}
        # pg_ctl, pg_basebackup, initdb: children that die with their host (processes.spawn).
        result = processes.run(args, text=True, timeout=timeout, env=self._pg_env(), cwd="/",
                               stdin=subprocess.DEVNULL, **kwargs)
        if check and result.returncode != 0:
            raise ContinuityError(f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()[-800:]}")
        return result

    def _chown(self, path: Path) -> None:
        if not self.runs_as_root:
            return
        uid, gid, _ = self._os_user()
        os.chown(path, uid, gid)

    def _ensure_traversable(self) -> None:
        """The cluster user must reach the data dirs: relocate them when a parent dir is private."""
        if not self.runs_as_root:
            return
        probe = self._run_as_pg(["/bin/sh", "-c", f"test -x '{self.base}'"], check=False)
        if probe.returncode == 0:
            return
        digest = hashlib.sha256(str(self.base).encode()).hexdigest()[:10]
        outside = Path("/var/tmp") / f"continuity-pg-{digest}"  # noqa: S108 - needs a dir the pg user reaches
        outside.mkdir(parents=True, exist_ok=True)
        self._chown(outside)
        if not self._pg_link.is_symlink():
            if self._pg_link.exists():
                shutil.rmtree(self._pg_link)
            self._pg_link.symlink_to(outside)

    # ---- credentials ---------------------------------------------------------------------
    def superuser_password(self) -> str:
        """The generated superuser password of the local clusters (never printed or logged)."""
        secret_file = self.base / "secrets" / "pg-superuser"
        if not secret_file.exists():
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(secret_file.parent, 0o700)
            secret_file.write_text(secrets.token_urlsafe(24))
            os.chmod(secret_file, 0o600)
        return secret_file.read_text().strip()

    def _write_pgpass(self) -> None:
        line = f"*:*:*:{self.settings.superuser}:{self.superuser_password()}\n"
        if self.pgpass.exists() and self.pgpass.read_text() == line:
            return
        self.pgpass.write_text(line)
        os.chmod(self.pgpass, 0o600)
        self._chown(self.pgpass)

    # ---- connection info -----------------------------------------------------------------
    def dsn(self, name: str, dbname: str = "postgres") -> str:
        """A libpq connection string; the password comes from the pgpass file, never the string."""
        host = str(self.socket_dir) if name == "sandbox" else "127.0.0.1"
        return (f"host={host} port={self.port(name)} user={self.settings.superuser} dbname={dbname} "
                f"passfile={self.pgpass} connect_timeout=5 application_name=continuity")

    # ---- clusters ------------------------------------------------------------------------
    def _pg_ctl(
        self, name: str, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run_as_pg([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir(name)), *args],
                               timeout=timeout, check=check)

    def is_running(self, name: str) -> bool:
        if not (self.data_dir(name) / "PG_VERSION").exists():
            return False
        return self._pg_ctl(name, "status", check=False).returncode == 0

    def _conf_lines(self, name: str) -> str:
        conf = dict(COMMON_CONF)
        conf.update({
            "port": str(self.port(name)),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
        })
        conf.update(CLUSTER_CONF[name])
        if name == "primary":
            # Every WAL segment goes to the archive (barman-cloud-wal-archive); a quiet server still ships
            # its last writes within archive_timeout, which bounds the RPO of point-in-time recovery.
            conf.update({"archive_mode": "on", "archive_command": f"'{self.archive_script} %p'",
                         "archive_timeout": str(int(settings.get("CONTINUITY_ARCHIVE_TIMEOUT_SECONDS")))})
        return "".join(f"{k} = {v}\n" for k, v in conf.items())

    # ---- the WAL archive -----------------------------------------------------------------
    @property
    def archive_dir(self) -> Path:
        return self.pg_root / "archive"

    @property
    def archive_script(self) -> Path:
        return self.archive_dir / "archive-wal"

    @property
    def restore_script(self) -> Path:
        return self.archive_dir / "restore-wal"

    def archive_name(self) -> str:
        """The primary's folder in the archive: ``primary-{system identifier}`` (read with pg_controldata, so
        it is known while the cluster is down)."""
        if self._archive_name:
            return self._archive_name
        result = self._run_as_pg([str(self.bin_dir / "pg_controldata"), "-D", str(self.data_dir("primary"))])
        found = next((ln.split(":", 1)[1].strip() for ln in result.stdout.splitlines()
                      if ln.startswith("Database system identifier")), "")
        if not found.isdigit():
            raise ServerUnavailable(f"pg_controldata printed no system identifier for {self.data_dir('primary')}")
        self._archive_name = ARCHIVE_PREFIX + found
        return self._archive_name

    def barman(self) -> BarmanCloud:
        """The archive of the local clusters in Azurite, with tools the cluster user can run."""
        return BarmanCloud(self.settings.azurite_connection_string, bin_dir=tool_dir(self._can_run))

    def _can_run(self, bin_dir: Path) -> bool:
        probe = self._run_as_pg([str(bin_dir / "barman-cloud-wal-archive"), "--version"], check=False)
        return probe.returncode == 0

    def _write_archive_scripts(self) -> None:
        """The primary's archive_command and a rewound copy's restore_command: wrappers that read the
        storage connection string from a file only the cluster user can read."""
        barman = self.barman()
        directory = self.archive_dir
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._chown(directory)
        secret = directory / "storage-connection"
        secret.write_text(barman.connection_string)
        os.chmod(secret, 0o600)
        self._chown(secret)
        for script, archive in ((self.archive_script, True), (self.restore_script, False)):
            script.write_text(barman.wal_command(script, self.archive_name(), archive))
            os.chmod(script, 0o700)
            self._chown(script)

    def run_as_cluster_user(self, args: list[str] | Any, env: dict[str, str],
                            timeout: float) -> subprocess.CompletedProcess[str]:
        """A command as the clusters' OS user (Barman reads and writes their data directories)."""
        uid, gid, _ = self._os_user()
        kwargs: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if self.runs_as_root else {}
        full = {**env, "PGPASSFILE": str(self.pgpass)}
        return processes.run(list(args), text=True, timeout=timeout, env=full, cwd="/", stdin=subprocess.DEVNULL,
                             **kwargs)

    def base_backup(self, timeout: float = 3600) -> str:
        """A base backup of the primary into the archive (barman-cloud-backup). Returns its id."""
        return self.barman().take_base_backup(self.archive_name(), "127.0.0.1", self.port("primary"),
                                              self.settings.superuser, self.run_as_cluster_user,
                                              str(self.pgpass), timeout)

    def _write_conf(self, name: str) -> None:
        # Our settings live in an included file so that initdb's and pg_basebackup's stay untouched.
        data = self.data_dir(name)
        include = data / "continuity.conf"
        include.write_text(self._conf_lines(name))
        self._chown(include)
        main_conf = data / "postgresql.conf"
        text = main_conf.read_text()
        if "include_if_exists = 'continuity.conf'" not in text:
            main_conf.write_text(text + "\ninclude_if_exists = 'continuity.conf'\n")

    def _initdb(self, name: str) -> None:
        data = self.data_dir(name)
        data.parent.mkdir(parents=True, exist_ok=True)
        self._chown(data.parent)
        pwfile = data.parent / "pwfile"
        pwfile.write_text(self.superuser_password() + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            self._run_as_pg([
                str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.settings.superuser,
                f"--pwfile={pwfile}", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ], timeout=180)
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_conf(name)

    def _basebackup_replica(self) -> None:
        data = self.data_dir("replica")
        data.parent.mkdir(parents=True, exist_ok=True)
        self._chown(data.parent)
        if data.exists():
            shutil.rmtree(data)
        self._run_as_pg([
            str(self.bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port("primary")),
            "-U", self.settings.superuser, "-D", str(data), "-R", "-X", "stream", "--checkpoint=fast",
            "--no-sync",
        ], timeout=600)
        self._write_conf("replica")

    def _check_port(self, name: str) -> None:
        port = self.port(name)
        if not port_is_free(port):
            raise PortInUse(
                f"port {port} for the {name} cluster is in use by another process; "
                f"free it or set CONTINUITY_{name.upper()}_PORT to a free port"
            )

    def _start(self, name: str) -> None:
        if self.is_running(name):
            return
        self._write_conf(name)  # ports may have changed in settings since initdb
        if name != "sandbox":
            self._check_port(name)
        log = self.log_file(name)
        log.touch()
        self._chown(log)
        result = self._pg_ctl(name, "-l", str(log), "-w", "-t", "90", "start", check=False, timeout=120)
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
            raise ServerUnavailable(f"the {name} cluster did not start: {tail.strip() or result.stderr.strip()}; "
                                    f"see {log}")

    def up_clusters(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._ensure_traversable()
        self.pg_root.mkdir(parents=True, exist_ok=True)
        self._chown(self.pg_root)
        sockets = self.socket_dir
        sockets.mkdir(parents=True, exist_ok=True)
        self._chown(sockets)
        self._write_pgpass()
        for name in ("primary", "sandbox", "control"):
            if not (self.data_dir(name) / "PG_VERSION").exists():
                self._initdb(name)
            if name == "primary":
                self._write_archive_scripts()  # names the archive folder by the cluster's system identifier
            self._start(name)
        self._ensure_archiving()
        if not (self.data_dir("replica") / "PG_VERSION").exists():
            self._basebackup_replica()
        self._start("replica")

    # ---- rewound copies (point-in-time recovery) ------------------------------------------
    @property
    def rewound_root(self) -> Path:
        return self.pg_root / "rewound"

    def rewound_port(self, name: str) -> int:
        """A unix-socket "port" for a rewound copy: never on TCP, so only unique in the socket dir."""
        start = self.port("sandbox") + 100
        for port in range(start, start + 100):
            if not (self.socket_dir / f".s.PGSQL.{port}.lock").exists():
                return port
        raise ServerUnavailable("100 rewound copies are running: remove finished ones (continuity pitr cleanup)")

    def rewound_dsn(self, port: int, dbname: str = "postgres") -> str:
        return (f"host={self.socket_dir} port={port} user={self.settings.superuser} dbname={dbname} "
                f"passfile={self.pgpass} connect_timeout=5 application_name=continuity")

    def restore_base_backup(self, name: str, backup_id: str, timeout: float = 3600) -> Path:
        """``barman-cloud-restore`` of a base backup into a fresh directory for the copy ``name``."""
        root = self.rewound_root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self._chown(root)
        self.remove_rewound(name)
        folder = root / name
        folder.mkdir()
        self._chown(folder)
        self.barman().restore(self.archive_name(), backup_id, folder / "data", self.run_as_cluster_user, timeout)
        return folder / "data"

    def start_rewound(self, name: str, conf: dict[str, str], timeout: float = 3600) -> bool:
        """Start the restored copy in recovery with ``conf`` (replacing every production setting it carried).

        Waits (pg_ctl -w) until the copy is consistent or has stopped; False when it stopped (its log says why:
        a segment the restore command could not bring, a corrupted record).
        """
        data = self.rewound_root / name / "data"
        # The base backup carries the primary's continuity.conf (port, archive_command): replace it whole.
        lines = "".join(f"{k} = {v}\n" for k, v in conf.items())
        for file_name, text in (("continuity.conf", lines), ("recovery.signal", ""), ("postgresql.auto.conf", "")):
            path = data / file_name
            path.write_text(text)
            self._chown(path)
        log = self.rewound_root / name / "postgres.log"
        log.touch()
        self._chown(log)
        result = self._run_as_pg([str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t",
                                  str(int(timeout)), "start"], timeout=timeout + 30, check=False)
        return result.returncode == 0

    def rewound_log(self, name: str) -> str:
        log = self.rewound_root / name / "postgres.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def rewound_running(self, name: str) -> bool:
        data = self.rewound_root / name / "data"
        if not (data / "PG_VERSION").exists():
            return False
        return self._run_as_pg([str(self.bin_dir / "pg_ctl"), "-D", str(data), "status"], check=False).returncode == 0

    def remove_rewound(self, name: str) -> None:
        """Stop (immediately: nothing in it is kept) and delete the copy ``name``; idempotent."""
        folder = self.rewound_root / name
        if (folder / "data" / "PG_VERSION").exists():
            self._run_as_pg([str(self.bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w",
                             "stop"], check=False, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

    def rewound_copies(self) -> list[str]:
        root = self.rewound_root
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []

    def _ensure_archiving(self) -> None:
        """A primary started before archiving was configured is restarted once (archive_mode needs it)."""
        import psycopg

        with psycopg.connect(self.dsn("primary"), autocommit=True) as conn:
            row = conn.execute("select current_setting('archive_mode')").fetchone()
        if row and str(row[0]) == "on":
            return
        self._write_conf("primary")
        result = self._pg_ctl("primary", "-l", str(self.log_file("primary")), "-m", "fast", "-w", "-t", "90",
                              "restart", check=False, timeout=120)
        if result.returncode != 0:
            raise ServerUnavailable(f"the primary cluster did not restart with WAL archiving: "
                                    f"{result.stderr.strip()}; see {self.log_file('primary')}")

    def down_clusters(self) -> None:
        for name in CLUSTERS:
            if self.is_running(name):
                self._pg_ctl(name, "-m", "fast", "-w", "-t", "60", "stop", check=False, timeout=90)

    def rebuild_replica(self) -> None:
        """Throw the replica away and stream a fresh one from the primary."""
        if self.is_running("replica"):
            self._pg_ctl("replica", "-m", "immediate", "-w", "stop", check=False)
        self._basebackup_replica()
        self._start("replica")

    # ---- azurite -------------------------------------------------------------------------
    @property
    def azurite_pidfile(self) -> Path:
        return self.base / "azurite.pid"

    def _azurite_bin(self) -> Path:
        candidate = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        if not candidate.exists():
            raise ToolMissing("Azurite is not installed: run `npm ci` (make does it) in the project root")
        return candidate

    def azurite_healthy(self) -> tuple[bool, str]:
        url = f"http://127.0.0.1:{self.settings.azurite_blob_port}/devstoreaccount1?comp=list"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                server = resp.headers.get("Server", "")
        except urllib.error.HTTPError as exc:  # Azurite answers 403 to an unsigned request: it is up.
            server = exc.headers.get("Server", "")
        except OSError as exc:
            return False, f"not reachable: {exc}"
        return ("Azurite" in server), server

    def up_azurite(self) -> None:
        if live_pid(self.azurite_pidfile) and self.azurite_healthy()[0]:
            return
        for key in ("azurite_blob_port", "azurite_queue_port", "azurite_table_port"):
            port = int(getattr(self.settings, key))
            if not port_is_free(port):
                raise PortInUse(f"port {port} for Azurite is in use by another process; free it or set "
                                f"CONTINUITY_{key.upper()} to a free port")
        location = self.base / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        log = open(self.base / "azurite.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [str(self._azurite_bin()), "--silent", "--location", str(location),
             "--blobHost", "127.0.0.1", "--blobPort", str(self.settings.azurite_blob_port),
             "--queueHost", "127.0.0.1", "--queuePort", str(self.settings.azurite_queue_port),
             "--tableHost", "127.0.0.1", "--tablePort", str(self.settings.azurite_table_port),
             "--skipApiVersionCheck", "--disableProductStyleUrl"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(PROJECT_ROOT),
        )
        log.close()
        self.azurite_pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.azurite_healthy()[0]:
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise ServerUnavailable(f"Azurite did not start; see {self.base / 'azurite.log'}")

    def down_azurite(self) -> None:
        pid = live_pid(self.azurite_pidfile)
        if pid is not None:
            stop_group(pid)
        self.azurite_pidfile.unlink(missing_ok=True)

    # ---- whole stack ---------------------------------------------------------------------
    def up(self) -> StackStatus:
        self.up_clusters()
        self.up_azurite()
        self.ensure_containers()
        return self.status()

    def ensure_containers(self) -> None:
        """The storage account's containers, as Bicep creates them in Azure."""
        from continuity.adapters.storage.blob_store import BlobStore

        names = [settings.get(key) for key in ("CONTINUITY_BACKUP_CONTAINER", "CONTINUITY_ATTACHMENT_CONTAINER",
                                               "CONTINUITY_EVIDENCE_CONTAINER", "CONTINUITY_WAL_CONTAINER",
                                               "CONTINUITY_ATTACHMENT_KEEP_CONTAINER")]
        BlobStore(self.settings.azurite_connection_string).ensure_containers(names)

    def down(self) -> None:
        """Stop the clusters, then Azurite (the CLI stops the devhost first: continuity.cli.stack). Clusters
        first: a primary's archiver ships its last segments at shutdown and needs the store up."""
        self.down_clusters()
        self.down_azurite()

    def delete_files(self) -> None:
        """Delete the stack's files (call when its processes are stopped), the relocated cluster dirs too."""
        if self._pg_link.is_symlink():
            shutil.rmtree(self._pg_link.resolve(), ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def status(self) -> StackStatus:
        status = StackStatus()
        for name in CLUSTERS:
            status.clusters.append(self._cluster_status(name))
        healthy, server = self.azurite_healthy()
        status.azurite = {"healthy": healthy, "blob_port": self.settings.azurite_blob_port, "server": server}
        return status

    def _cluster_status(self, name: str) -> ClusterStatus:
        status = ClusterStatus(name=name, port=self.port(name), running=self.is_running(name), healthy=False,
                               tcp=name != "sandbox")
        if not status.running:
            status.detail = "stopped" if (self.data_dir(name) / "PG_VERSION").exists() else "not created"
            return status
        import psycopg

        try:
            with psycopg.connect(self.dsn(name), autocommit=True) as conn:
                in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()
                status.role = "standby" if in_recovery and in_recovery[0] else "primary"
                if name == "replica" and status.role == "standby":
                    row = conn.execute(
                        "select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),"
                        # Caught up means no lag, however long ago the primary's last write was.
                        " case when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0"
                        " else extract(epoch from now() - pg_last_xact_replay_timestamp()) end,"
                        " (select status from pg_stat_wal_receiver)"
                    ).fetchone()
                    if row:
                        status.replication_lag_bytes = int(row[0] or 0)
                        status.replication_lag_seconds = float(row[1]) if row[1] is not None else None
                        status.detail = f"wal receiver {row[2] or 'not streaming'}"
                if name == "primary":
                    row = conn.execute(
                        "select coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)), 0), count(*)"
                        " from pg_stat_replication"
                    ).fetchone()
                    if row:
                        status.replication_lag_bytes = int(row[0])
                        status.detail = f"{row[1]} streaming standby(s)"
            status.healthy = True
        except psycopg.Error as exc:
            status.detail = f"not accepting connections: {str(exc).strip().splitlines()[0]}"
        return status


def status_json(stack: LocalStack) -> str:
    return json.dumps(stack.status().to_json(), indent=2)


