"""Start and stop a private nx-27017 (MongoDB wire protocol over SQLite) server for benchmarks.

Usable from any benchmark script (peers and theodolite alike)::

    from bench.mongo_server import MongoServer

    with MongoServer() as server:          # free port, own temp --data-dir and --pid-file
        client = pymongo.MongoClient(server.url)
        ...

or from a shell, to keep one running until Ctrl-C::

    .venv/bin/python bench/mongo_server.py [--port N]

If ``url`` is given (for example a real MongoDB in ``THEODOLITE_TEST_MONGO_URL``) nothing is started
and the context manager only hands that URL back, so callers need no special case.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_nx_27017() -> list[str]:
    """Command that runs nx-27017: the one next to this interpreter first, then PATH."""
    beside = Path(sys.executable).parent / "nx-27017"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nx-27017")
    if found:
        return [found]
    # Fall back to the module itself (what the console script calls).
    return [sys.executable, "-c", "import sys; from nx_27017.nx_27017 import main; sys.exit(main())"]


class MongoServer:
    """A foreground nx-27017 child process on a free port with its own data dir, pid and log file.

    The process runs in its own session and is stopped by its pid (SIGTERM, then SIGKILL);
    the temp directory is removed on stop unless ``keep_dir`` is set.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        journal_mode: str = "WAL",
        keep_dir: bool = False,
        startup_timeout: float = 30.0,
    ) -> None:
        self._external_url = url
        self.host = host
        self.port = port
        self.journal_mode = journal_mode
        self.keep_dir = keep_dir
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.tmpdir: Path | None = None

    # -- properties -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._external_url:
            return self._external_url
        if self.port is None:
            raise RuntimeError("server not started")
        return f"mongodb://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path | None:
        return self.tmpdir / "nx-27017.log" if self.tmpdir else None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._external_url:
            self._wait_ready()
            return self
        self.tmpdir = Path(tempfile.mkdtemp(prefix="bench-nx27017-"))
        if self.port is None:
            self.port = free_port(self.host)
        data_dir = self.tmpdir / "data"
        data_dir.mkdir()
        cmd = find_nx_27017() + [
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--pid-file",
            str(self.tmpdir / "nx-27017.pid"),
            "--log-file",
            str(self.log_file),
            "--journal-mode",
            self.journal_mode,
        ]
        self._stdout = open(self.tmpdir / "stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import pymongo

        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.proc.returncode}:\n{self.tail_log()}")
            try:
                client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
                try:
                    client.admin.command("ping")
                    return
                finally:
                    client.close()
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
                time.sleep(0.1)
        raise TimeoutError(f"Mongo server at {self.url} not answering: {last}\n{self.tail_log()}")

    def tail_log(self, lines: int = 30) -> str:
        out = []
        for name in ("stdout.log", "nx-27017.log"):
            path = self.tmpdir / name if self.tmpdir else None
            if path and path.exists():
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if getattr(self, "_stdout", None) is not None:
            self._stdout.close()
            self._stdout = None
        if self.tmpdir is not None and not self.keep_dir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _raise_interrupt(*_args) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run a private nx-27017 server until Ctrl-C.")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--keep-dir", action="store_true")
    args = parser.parse_args(argv)
    with MongoServer(port=args.port, keep_dir=args.keep_dir) as server:
        print(server.url, flush=True)
        print(f"data in {server.tmpdir}", file=sys.stderr, flush=True)
        try:
            signal.signal(signal.SIGTERM, _raise_interrupt)
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
