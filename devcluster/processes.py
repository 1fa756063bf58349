"""Start, find and stop the processes a devcluster owns.

Each process is recorded with its pid *and* start time, so ``down`` stops
exactly what ``up`` started even if a pid was reused since.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass
class ProcessRecord:
    name: str
    pid: int
    started: float  # psutil create_time, to recognise the same process later
    argv: list[str]
    log: str

    def process(self) -> psutil.Process | None:
        """The live process, or None if it exited or the pid now belongs to another."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def to_json(self) -> dict:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> ProcessRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: signals from our terminal do not reach it
        )
    started = psutil.Process(proc.pid).create_time()
    return ProcessRecord(name, proc.pid, started, list(argv), str(log))


def stop(record: ProcessRecord, timeout: float = 10.0) -> None:
    proc = record.process()
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        proc.terminate()
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def stop_children_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``) end this process through ``SystemExit``, so the
    ``finally`` blocks that stop what it started still run: children started here have
    sessions of their own and would otherwise outlive it, holding a core and a port."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError:
        return ""


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, record: ProcessRecord | None = None, interval: float = 0.2
) -> None:
    """Poll ``check`` until it holds; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if record is not None and record.process() is None:
            raise RuntimeError(f"{record.name} exited while waiting for {what}; log {record.log}:\n{tail(record.log)}")
        time.sleep(interval)
    log_text = f"; log {record.log}:\n{tail(record.log)}" if record else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{log_text}")


def start_until_ready(
    name: str, argv: Sequence[str], log: Path, ready_url: str, *, timeout: float, env: dict[str, str] | None = None
) -> ProcessRecord:
    """Start a process and wait until ``ready_url`` answers 200; stop it again if it never does."""
    record = start(name, argv, log, env)

    def ready() -> bool:
        with urllib.request.urlopen(ready_url, timeout=2) as response:
            return response.status == 200

    try:
        wait_until(ready, timeout=timeout, what=f"{name} at {ready_url}", record=record)
    except BaseException:
        stop(record)
        raise
    return record
