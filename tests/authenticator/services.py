"""Real services for the identity tests: a PostgreSQL cluster and the node OpenID provider.

Both run as child processes on 127.0.0.1 free ports, in temporary directories, and are
waited for on a condition (never a fixed sleep). A missing binary fails the test loudly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import requests

from tests.hubtools import REPO
from tests.support import free_port, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PROVIDER_SCRIPT = REPO / "tests" / "oidc_provider" / "provider.mjs"


def _as_postgres(*argv: str, **kw) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as the `postgres` user (initdb refuses root)."""
    cmd = list(argv) if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class PostgresCluster:
    """Our own throw-away cluster (never the system one): trust auth, fsync off."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            assert (PG_BIN / tool).exists(), f"{PG_BIN / tool} is missing: install Debian postgresql 15"
        self.dir = Path(tempfile.mkdtemp(prefix="visahub-pg-", dir="/var/tmp"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def start(self) -> PostgresCluster:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                     "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                     "-o", opts, "-w", "-t", "30", "start")  # fmt: skip
        wait_for(lambda: self.connect("postgres").close() or True, 30, f"PostgreSQL on port {self.port}")
        return self

    def stop(self) -> None:
        try:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    @contextmanager
    def refusing_connections(self, db: str) -> Iterator[None]:
        """An outage of one database: existing connections cut, new ones refused."""
        conn = self.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
            conn.close()


class OidcProvider:
    """tests/oidc_provider/provider.mjs: npm oidc-provider with test accounts `<login>-oidc`."""

    def __init__(self, access_token_ttl: int = 4) -> None:
        node = shutil.which("node")
        assert node, "node is missing: run `make setup`"
        assert (REPO / "node_modules" / "oidc-provider").is_dir(), "npm oidc-provider is missing: run `make setup`"
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.secret = os.urandom(16).hex()
        self.access_token_ttl = access_token_ttl
        self.log_path = Path(tempfile.mkstemp(prefix="visahub-oidc-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None
        self.cmd = [node, str(PROVIDER_SCRIPT)]

    def start(self) -> OidcProvider:
        env = {**os.environ, "PORT": str(self.port), "ADMIN_SECRET": self.secret,
               "ACCESS_TOKEN_TTL": str(self.access_token_ttl)}  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        wait_for(self._up, 30, f"OIDC provider on {self.issuer} (log: {self.log_path})")
        return self

    def _up(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"provider exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        return requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_path.unlink(missing_ok=True)

    def _admin(self, path: str, **form: str) -> dict:
        r = requests.post(f"{self.issuer}{path}", data=form, timeout=10,
                          headers={"Authorization": f"Bearer {self.secret}"})  # fmt: skip
        r.raise_for_status()
        return r.json()

    def register_client(self, redirect_uri: str) -> tuple[str, str]:
        """A confidential client for one hub (RFC 7591 registration); returns id and secret."""
        r = requests.post(
            f"{self.issuer}/reg", timeout=10, headers={"Authorization": f"Bearer {self.secret}"},
            json={"redirect_uris": [redirect_uri], "grant_types": ["authorization_code", "refresh_token"],
                  "response_types": ["code"], "token_endpoint_auth_method": "client_secret_post"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        return r.json()["client_id"], r.json()["client_secret"]

    def revoke(self, account: str) -> int:
        """End the account's sessions and grants: its access and refresh tokens stop working."""
        return self._admin("/admin/revoke", account=account)["revoked"]

    @contextmanager
    def mode(self, mode: str) -> Iterator[None]:
        """Answer OIDC requests with an HTML page ("garbage") or reset connections ("reset")."""
        self._admin("/admin/mode", mode=mode)
        try:
            yield
        finally:
            self._admin("/admin/mode", mode="normal")
