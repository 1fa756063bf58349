"""A benchmark killed with SIGTERM (``kill``, ``timeout``) stops the servers it started:
they run in sessions of their own, so without ``stop_children_on_sigterm`` they outlive it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SCRIPT = """
import sys, time
from pathlib import Path
from tfsched.devcluster import processes
if sys.argv[2] == "handled":
    processes.stop_children_on_sigterm()
child = processes.start("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], Path(sys.argv[1]))
try:
    print(child.pid, flush=True)
    time.sleep(120)
finally:
    processes.stop(child)
"""


def _killed_parent_leaves(tmp_path: Path, mode: str) -> tuple[int, psutil.Process]:
    parent = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "sleeper.log"), mode], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGTERM)
    return parent.wait(30), child


def _gone(child: psutil.Process) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not child.is_running() or child.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_stops_the_children_too(tmp_path: Path) -> None:
    code, child = _killed_parent_leaves(tmp_path, "handled")
    assert code == 128 + signal.SIGTERM
    assert _gone(child)


def test_without_it_the_child_outlives_a_killed_parent(tmp_path: Path) -> None:
    code, child = _killed_parent_leaves(tmp_path, "default")
    try:
        assert code == -signal.SIGTERM
        with pytest.raises(psutil.TimeoutExpired):
            child.wait(1)  # still running: what the handler is for
    finally:
        child.kill()
