"""The tracking stores the tests run against: a sqlite file, or a real `mlflow server` over sqlite or
over a real PostgreSQL cluster, each resettable to a saved state between tests.

Teams outgrow one machine by pointing every CI job at one `mlflow server` backed by PostgreSQL, so
the registry code must hold there too (unique-name creates under concurrency, stage transitions,
served artifacts). Starting PostgreSQL and a server takes ~10 s, so a worker starts one and every
test gets a *fresh database* under it: `reset(snapshot)` replaces the server's database with a
copy of a saved one (`CREATE DATABASE ... TEMPLATE` on PostgreSQL, a file copy on sqlite), which
takes a fraction of a second. The server keeps running: its connection pool pings each connection
before use (MLflow sets `pool_pre_ping`), so connections to the dropped database are replaced.

PostgreSQL refuses to run as root: when the tests run as root (CI), the cluster is made and run by
an unprivileged system user (`postgres`, else `nobody`) in a folder it owns, outside pytest's
root-only temporary folders.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVER_START = 120  # seconds: a server answers /health after 7-9 s on an idle machine, far later on a loaded one


def rebase(db: Path, old: Path, new: Path) -> None:
    """Point an sqlite store's paths (artifact locations, model sources) from folder `old` to `new`,
    where a copy of its artifacts is."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        for (table,) in conn.execute("select name from sqlite_master where type = 'table'").fetchall():
            for _, name, kind, *_ in conn.execute(f"pragma table_info('{table}')").fetchall():
                if kind.upper().startswith(("VARCHAR", "TEXT")):
                    conn.execute(f'update "{table}" set "{name}" = replace("{name}", ?, ?)', (str(old), str(new)))
    conn.close()


def free_port() -> int:
    """A port nothing listens on now, from the kernel's ephemeral range."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
    (the `postgresql` package puts them there, not on PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def postgres_missing() -> str | None:
    """Why PostgreSQL-backed tests cannot run here, or None when they can."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)"
    try:
        import psycopg  # noqa: F401  (MLflow's postgresql:// driver under SQLAlchemy 2.1)
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0 and _unprivileged_user() is None:
        return "running as root with no unprivileged user (postgres, nobody) to run PostgreSQL as"
    return None


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with password authentication.

    The superuser `mlflow` has a random password, so the tests can check it is never printed.
    Durability is switched off (fsync, synchronous_commit, full_page_writes): the cluster lives as
    long as the test session and speed matters more than surviving a power cut.
    """

    user = "mlflow"

    def __init__(self) -> None:
        # /dev/shm when it has room: the cluster is small and disk sync is the slow part
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.folder = Path(tempfile.mkdtemp(prefix="mlflow-retrain-pg-", dir=where))
        self.data, self.port = self.folder / "data", free_port()
        self.password = secrets.token_hex(12)
        self.bin = postgres_bin()
        self.runas = _unprivileged_user() if os.geteuid() == 0 else None
        if self.runas is not None:
            os.chown(self.folder, self.runas.pw_uid, self.runas.pw_gid)
        os.chmod(self.folder, 0o700)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.runas is not None:
            command = ["runuser", "-u", self.runas.pw_name, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder, timeout=120,
                              check=False)
        if check and done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done

    def start(self) -> Postgres:
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        if self.runas is not None:
            os.chown(pwfile, self.runas.pw_uid, self.runas.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync", "--locale=C")
        pwfile.unlink()
        self.resume()
        return self

    def resume(self) -> None:
        """Start (or restart) the server on the same port and data."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def uri(self, database: str, password: str | None = None) -> str:
        return f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str) -> None:
        """Statements on the maintenance database, each in its own transaction (CREATE DATABASE
        cannot run inside one)."""
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True, connect_timeout=10) as db:
            for statement in statements:
                db.execute(statement)

    def copy(self, source: str, target: str) -> None:
        """`target` becomes a copy of database `source`; connections to either are cut first (a
        template must have none, and the old target is dropped under its users)."""
        self.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{source}' "
                 "AND pid <> pg_backend_pid()",
                 f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)',
                 f'CREATE DATABASE "{target}" TEMPLATE "{source}"')


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over `backend` (artifacts proxied: `mlflow-artifacts:`),
    in its own process group so a signal reaches its workers too."""

    def __init__(self, backend: str, folder: Path, workers: int = 2, env: dict[str, str] | None = None):
        self.backend, self.folder, self.workers = backend, folder, workers
        self.artifacts = folder / "artifacts"
        self.port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "server.log").open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts),
                 "--workers", str(self.workers)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        give_up = time.monotonic() + SERVER_START
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {self.log()[-2000:]}")
            time.sleep(0.3)
        return self

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(20)
        self.proc = None


class Backend:
    """What `store` hands a test: a tracking URI and a way back to a saved state of the store."""

    kind = "sqlite"
    uri: str
    artifacts: Path | None = None

    def reset(self, snapshot: str = "clean") -> None:
        raise NotImplementedError

    def save(self, snapshot: str) -> None:
        raise NotImplementedError

    def has(self, snapshot: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresServer(Backend):
    """`mlflow server --backend-store-uri postgresql://...` over a cluster of its own. Snapshots are
    databases (`snap_<name>`); the server's database `mlflow` is replaced by a copy on `reset`."""

    kind = "postgres"

    def __init__(self, folder: Path, workers: int = 2):
        self.pg = Postgres().start()
        self.snapshots: set[str] = set()
        try:  # the server runs MLflow's migrations into the empty database before it answers
            self.pg.sql('CREATE DATABASE "mlflow"')
            self.server = MlflowServer(self.pg.uri("mlflow"), folder, workers).start()
            self.save("clean")
        except BaseException:
            self.pg.destroy()
            raise
        self.uri, self.artifacts = self.server.uri, self.server.artifacts

    def reset(self, snapshot: str = "clean") -> None:
        self.pg.copy(f"snap_{snapshot}", "mlflow")

    def save(self, snapshot: str) -> None:
        self.pg.copy("mlflow", f"snap_{snapshot}")
        self.snapshots.add(snapshot)

    def has(self, snapshot: str) -> bool:
        return snapshot in self.snapshots

    def close(self) -> None:
        self.server.stop()
        self.pg.destroy()


class SqliteServer(Backend):
    """`mlflow server` over a sqlite file. The server opens the file anew for every request
    (NullPool), so `reset` can swap the file under it."""

    kind = "server"

    def __init__(self, folder: Path, template: Path, workers: int = 2):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "mlflow.db"
        shutil.copy(template, folder / "snap_clean.db")
        shutil.copy(template, self.db)
        self.server = MlflowServer(f"sqlite:///{self.db}", folder, workers,
                                   env={"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}).start()
        self.uri, self.artifacts = self.server.uri, self.server.artifacts

    def reset(self, snapshot: str = "clean") -> None:
        shutil.copy(self.folder / f"snap_{snapshot}.db", self.folder / "next.db")
        os.replace(self.folder / "next.db", self.db)

    def save(self, snapshot: str) -> None:
        shutil.copy(self.db, self.folder / f"snap_{snapshot}.db")

    def has(self, snapshot: str) -> bool:
        return (self.folder / f"snap_{snapshot}.db").exists()

    def close(self) -> None:
        self.server.stop()
