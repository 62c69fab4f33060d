"""Run the benchmarks of ``provisioner`` and print their tables as Markdown.

    python benchmarks/run.py [--only a,b,c,d] [--quick]

a: budget, b: shared budget, c: CPU overhead, d: memory; see README.md next
to this file. Progress goes to stderr, the tables to stdout. ``--quick``
shrinks every size for a smoke run of about two minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import scenarios
import tables

import provisioner

Section = Callable[[Path, scenarios.Sizes], str]

_GIT_LIMIT_S = 10.0

SECTIONS: dict[str, Section] = {
    "a": lambda work, sizes: tables.budget_table(
        scenarios.budget(work, sizes, other_share=0.0)
    ),
    "b": lambda work, sizes: tables.budget_table(
        scenarios.budget(work, sizes, other_share=scenarios.OTHER_SHARE)
    ),
    "c": lambda work, sizes: tables.overhead_table(scenarios.overhead(work, sizes)),
    "d": lambda work, sizes: tables.memory_table(scenarios.memory(work, sizes)),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """``--only`` (a comma-separated subset of a, b, c, d) and ``--quick``."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help="comma-separated sections to run (default: a,b,c,d)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke run"
    )
    args = parser.parse_args(argv)
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        parser.error(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    args.sections = [key for key in SECTIONS if key in chosen]
    return args


def measured_source() -> str:
    """The commit of the ``provisioner`` the children import, when it has one."""
    package_dir = Path(provisioner.__file__).resolve().parent
    git = ["git", "-C", str(package_dir)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=_GIT_LIMIT_S,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=_GIT_LIMIT_S,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"provisioner {provisioner.__version__}, not from a git checkout"
    dirty = " with uncommitted changes" if changes else ""
    return f"provisioner {provisioner.__version__} at commit {commit}{dirty}"


def interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM (and a SIGINT a shell told us to ignore) into Ctrl-C.

    The exception unwinds through every ``with`` and ``finally``, so no
    sandbox or client outlives the benchmark.
    """
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections in order and print their tables."""
    args = parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    started_s = time.monotonic()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="provisioner-bench-") as tmp:
        work = Path(tmp)
        scenarios.warm_up(work, sizes)
        rendered = [SECTIONS[key](work, sizes) for key in args.sections]

    took_s = time.monotonic() - started_s
    mode = " --quick" if args.quick else ""
    print(f"`python benchmarks/run.py --only {','.join(args.sections)}{mode}`")
    python = sys.version.split()[0]
    print(
        f"({measured_source()}; {took_s / 60:.1f} min; Python {python} on "
        f"{sys.platform}, {os.cpu_count()} CPUs; load average {load_before:.2f} "
        f"at start, {os.getloadavg()[0]:.2f} at end)"
    )
    print()
    print("\n\n".join(rendered))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        sys.exit(130)
