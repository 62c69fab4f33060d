"""Child processes measured alone: wall time, CPU seconds and peak memory.

``os.wait4`` returns the resource usage of exactly the child it reaps, so a
client's CPU and peak resident memory are its own, never mixed with the
sandbox's or an earlier client's. (``getrusage(RUSAGE_CHILDREN)`` would sum
every child reaped so far and keep only the largest peak of them all.)
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CLIENTS_SCRIPT = BENCH_DIR / "clients.py"

# How often a running child is checked on; bounds the error on wall time.
_POLL_S = 0.005
# Output kept from a child's stderr, for a failure message.
_STDERR_TAIL_CHARS = 2000
# ru_maxrss is in KiB on Linux; an MB here is 10**6 bytes.
_KIB_PER_MB = 1e6 / 1024


@dataclass(frozen=True, slots=True)
class ChildRun:
    """How one child process went."""

    exit_code: int | None  # None when it was killed at its time limit
    timed_out: bool
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout: str
    stderr_tail: str

    def last_json(self) -> dict[str, Any]:
        """The last stdout line that is a JSON object, or an empty dict."""
        return last_json(self.stdout)


def last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object, or an empty dict."""
    for line in reversed(text.splitlines()):
        try:
            decoded = json.loads(line)
        except ValueError:
            continue
        if isinstance(decoded, dict):
            return decoded
    return {}


def child_env(work: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """This environment without CLOUDFLARE_* and PROVISIONER_*, plus ``extra``.

    Children keep compiled bytecode under ``work``, as an installed package
    has it, even where PYTHONDONTWRITEBYTECODE is set: start-up then costs
    what it costs a user, not a compilation of every module on every run.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOUDFLARE_", "PROVISIONER_"))
        and key != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env.update(extra)
    return env


def provisioner_argv(*args: str) -> list[str]:
    """The installed ``provisioner`` command (``python -m`` when not on disk)."""
    script = Path(sys.executable).with_name("provisioner")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "provisioner", *args]


def clients_argv(kind: str, *args: str) -> list[str]:
    """One of the comparison clients of ``clients.py``."""
    return [sys.executable, str(CLIENTS_SCRIPT), kind, *args]


def run_child(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, limit_s: float
) -> ChildRun:
    """Run ``argv`` to its end, or kill it after ``limit_s``; measure it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started_s = time.monotonic()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd
        )
        status, usage, timed_out = _reap(process, started_s + limit_s)
        wall_s = time.monotonic() - started_s

        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")

    return ChildRun(
        exit_code=None if timed_out else os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        wall_s=wall_s,
        cpu_s=usage.ru_utime + usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / _KIB_PER_MB,
        stdout=stdout,
        stderr_tail=stderr[-_STDERR_TAIL_CHARS:],
    )


def _reap(process: subprocess.Popen[bytes], deadline_s: float) -> tuple[int, Any, bool]:
    """Wait for the child (killing it at the deadline); its status and usage."""
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if not timed_out and time.monotonic() >= deadline_s:
                process.kill()
                timed_out = True
            time.sleep(_POLL_S)
    except BaseException:
        # Interrupted (Ctrl-C, say): the child must not outlive the benchmark.
        process.kill()
        with contextlib.suppress(ChildProcessError):  # reaped just before
            os.wait4(process.pid, 0)
        raise

    # Popen must not wait for a child that wait4 already reaped.
    process.returncode = os.waitstatus_to_exitcode(status)
    return status, usage, timed_out
