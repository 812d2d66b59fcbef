"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` + ``pg_ctl start`` on a temp dir.

The server listens on a Unix socket in that dir and on 127.0.0.1:PORT (password login there, for
the wrong-password spec). Run as root, the server runs as the ``postgres`` user. Nothing is
installed here: :func:`why_unavailable` says in one line what is missing.

    >>> with throwaway_cluster() as pg:  # doctest: +SKIP
    ...     url = pg.create_database("study")
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "prune-snr-test"


def server_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=os.path.dirname(found)):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    return None


def why_unavailable() -> str | None:
    """None when a throwaway cluster can start here, else why not (one line)."""
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    if server_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    port: int
    bin: Path

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str) -> str:
        """SQLAlchemy URL over the Unix socket (no password: trust)."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{database}"

    def ctl(self, *args: str) -> None:
        _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-w", "-t", "60", *args])

    def start(self) -> None:
        self.ctl(
            "-l", str(self.root / "server.log"), "-o", f"-k {self.socket_dir} -p {self.port} -h 127.0.0.1", "start"
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is dropped."""
        self.ctl("-m", "fast", "-o", f"-k {self.socket_dir} -p {self.port} -h 127.0.0.1", "restart")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> None:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


@contextlib.contextmanager
def throwaway_cluster():
    """Start a cluster in a new temp dir; stop it and remove the dir on exit."""
    reason = why_unavailable()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="prune-snr-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    (root / "sock").mkdir()
    if os.geteuid() == 0:
        shutil.chown(root / "sock", "postgres", "postgres")
    cluster = Cluster(root=root, port=free_port(), bin=server_bin())
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    # local socket: trust; TCP: password (scram), so a wrong password is refused
    _as_postgres(
        [
            str(cluster.bin / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    started = False
    try:
        cluster.start()
        started = True
        yield cluster
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
