"""The four measurements: budget (a), shared budget (b), overhead (c), memory (d).

Every client run gets a fresh sandbox in its own process, so no run inherits
another's namespaces, window or lockout. Failed rows are counted the same way
for every client: manifest names the account does not hold at the end.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from children import (
    ChildRun,
    child_env,
    clients_argv,
    last_json,
    provisioner_argv,
    run_child,
)
from sandbox import SandboxProcess

from provisioner.sandbox.config import DEFAULT_ACCOUNT, DEFAULT_TOKEN

T = TypeVar("T")

QUOTA_REQUESTS = 200
WINDOW_S = 5.0
CONCURRENCY = 10
OTHER_SHARE = 0.3
# A budget far above what loopback reaches: unthrottled runs measure the client.
UNLIMITED_BUDGET = ("1000000", "1")
CLIENTS = ("provisioner", "sdk", "bare")
LABELS = {
    "provisioner": "provisioner apply",
    "sdk": "cloudflare SDK 5.x",
    "bare": "bare aiohttp loop",
}
# Seconds the load client may outlive the run it accompanies, at most.
_LOAD_SLACK_S = 30.0
_LOAD_STOP_LIMIT_S = 15.0
# The memory runs get this long plus this much per row.
_MEMORY_BASE_LIMIT_S = 60.0
_MEMORY_ROWS_PER_S = 200.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each measurement does."""

    budget_rows: int
    overhead_rows: int
    memory_rows: tuple[int, ...]
    client_limit_s: float
    # Runs of each client in c, interleaved; the table shows the median run.
    overhead_repeats: int


FULL = Sizes(2000, 5000, (1000, 10_000, 100_000), 180.0, 5)
QUICK = Sizes(400, 500, (200, 1000, 5000), 60.0, 1)


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One client's run and what the sandbox saw of it."""

    client: str
    rows: int
    run: ChildRun
    rate_limited: int  # 429s answered to this client
    lockouts: int  # lockouts of the token, whoever caused them
    failed_rows: int
    other: dict[str, Any] = field(default_factory=dict)  # the load client's counts


@dataclass(frozen=True, slots=True)
class BudgetReport:
    """Measurements a and b."""

    rows: int
    other_share: float
    results: list[ClientResult]

    @property
    def rate_per_s(self) -> float:
        """The request rate left to the client under test."""
        return (1.0 - self.other_share) * QUOTA_REQUESTS / WINDOW_S

    @property
    def ideal_s(self) -> float:
        """One list and N creates at exactly that rate."""
        return (self.rows + 1) / self.rate_per_s


@dataclass(frozen=True, slots=True)
class OverheadReport:
    """Measurement c, with a one-row run per client for its start-up cost.

    ``results`` and ``startup`` hold each client's median run by CPU time;
    ``cpu_s`` every run's CPU seconds, in the order they ran.
    """

    rows: int
    results: list[ClientResult]
    startup: dict[str, ChildRun]
    cpu_s: dict[str, list[float]]
    repeats: int


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """Measurement d: ``provisioner apply`` at growing manifest sizes."""

    results: list[ClientResult]


def write_manifest(path: Path, rows: int, prefix: str = "tenant") -> list[str]:
    """A CSV manifest of ``rows`` tenants; returns their namespace names."""
    names = [f"{prefix}-{index:06d}" for index in range(1, rows + 1)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("namespace,tenant_id,plan\n")
        for index, name in enumerate(names, start=1):
            handle.write(f"{name},cust-{index},{'pro' if index % 3 else 'free'}\n")
    return names


def warm_up(work: Path, sizes: Sizes) -> None:
    """Run every client once, unmeasured, to fill the children's bytecode cache."""
    for client in CLIENTS:
        manifest = work / f"warm-up-{client}.csv"
        names = write_manifest(manifest, 1, prefix=f"warm-up-{client}")
        measure(
            client,
            manifest,
            names,
            work,
            limit_s=sizes.client_limit_s,
            section="warm-up",
        )


def budget(work: Path, sizes: Sizes, *, other_share: float) -> BudgetReport:
    """a (``other_share`` 0) or b: every client against the scaled budget."""
    manifest = work / f"budget-{sizes.budget_rows}.csv"
    names = write_manifest(manifest, sizes.budget_rows)
    section = "b" if other_share else "a"

    results = [
        measure(
            client,
            manifest,
            names,
            work,
            throttled=True,
            limit_s=sizes.client_limit_s,
            other_share=other_share,
            section=section,
        )
        for client in CLIENTS
    ]

    return BudgetReport(sizes.budget_rows, other_share, results)


def overhead(work: Path, sizes: Sizes) -> OverheadReport:
    """c: every client unthrottled, plus a one-row run for start-up cost.

    Each client runs ``overhead_repeats`` times, the clients taking turns (a
    different one first each turn), so that a slow spell of a shared machine
    falls on all of them alike; each client's median run is the one shown.
    """
    manifest = work / f"overhead-{sizes.overhead_rows}.csv"
    names = write_manifest(manifest, sizes.overhead_rows)
    probe = work / "overhead-1.csv"
    probe_names = write_manifest(probe, 1)
    limit_s = sizes.client_limit_s
    repeats = max(1, sizes.overhead_repeats)

    probes: dict[str, list[ChildRun]] = {client: [] for client in CLIENTS}
    runs: dict[str, list[ClientResult]] = {client: [] for client in CLIENTS}
    for turn in range(repeats):
        # Each turn starts with another client, so that no client always runs
        # at the same point of the cycle.
        order = CLIENTS[turn % len(CLIENTS) :] + CLIENTS[: turn % len(CLIENTS)]
        for client in order:
            probes[client].append(
                measure(
                    client, probe, probe_names, work, limit_s=limit_s, section="c"
                ).run
            )
        for client in order:
            runs[client].append(
                measure(client, manifest, names, work, limit_s=limit_s, section="c")
            )

    return OverheadReport(
        sizes.overhead_rows,
        results=[_median(runs[client], lambda r: r.run.cpu_s) for client in CLIENTS],
        startup={
            client: _median(probes[client], lambda r: r.cpu_s) for client in CLIENTS
        },
        cpu_s={client: [r.run.cpu_s for r in runs[client]] for client in CLIENTS},
        repeats=repeats,
    )


def _median(items: list[T], key: Callable[[T], float]) -> T:
    """The middle item by ``key`` (the lower middle of an even count)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def memory(work: Path, sizes: Sizes) -> MemoryReport:
    """d: peak memory of ``provisioner apply`` per manifest size."""
    results = []
    for rows in sizes.memory_rows:
        manifest = work / f"memory-{rows}.csv"
        names = write_manifest(manifest, rows)
        limit_s = _MEMORY_BASE_LIMIT_S + rows / _MEMORY_ROWS_PER_S
        results.append(
            measure("provisioner", manifest, names, work, limit_s=limit_s, section="d")
        )
    return MemoryReport(results)


def measure(
    client: str,
    manifest: Path,
    names: Sequence[str],
    work: Path,
    *,
    limit_s: float,
    section: str,
    throttled: bool = False,
    other_share: float = 0.0,
) -> ClientResult:
    """Run one client on a fresh sandbox (with the load client if asked)."""
    quota = QUOTA_REQUESTS if throttled else 0
    with SandboxProcess(work, quota=quota, window_s=WINDOW_S) as sandbox:
        env = child_env(
            work,
            {
                "CLOUDFLARE_BASE_URL": sandbox.base_url,
                "CLOUDFLARE_ACCOUNT_ID": DEFAULT_ACCOUNT,
                "CLOUDFLARE_API_TOKEN": DEFAULT_TOKEN,
            },
        )
        argv = _client_argv(client, manifest, work, limit_s)
        own_env = _provisioner_env(throttled) if client == "provisioner" else {}
        load = _start_load(env, work, other_share, limit_s) if other_share else None
        try:
            run = run_child(argv, env={**env, **own_env}, cwd=work, limit_s=limit_s)
        finally:
            other = _stop_load(*load) if load is not None else {}
        stats = sandbox.stats()
        held = sandbox.names(DEFAULT_ACCOUNT)

    other_429s = int(other.get("429", 0))
    result = ClientResult(
        client=client,
        rows=len(names),
        run=run,
        rate_limited=int(stats["rate_limited"]) - other_429s,
        lockouts=int(stats["lockouts"]),
        failed_rows=len(set(names) - held),
        other=other,
    )
    _progress(section, result)
    return result


def _client_argv(client: str, manifest: Path, work: Path, limit_s: float) -> list[str]:
    if client == "provisioner":
        report_dir = tempfile.mkdtemp(dir=work, prefix="reports-")
        return provisioner_argv("apply", str(manifest), "--report-dir", report_dir)
    # The client stops itself a little before the hard limit, to print its counts.
    deadline_s = max(1.0, limit_s - 5.0)
    return clients_argv(
        client,
        *("--manifest", str(manifest), "--concurrency", str(CONCURRENCY)),
        *("--deadline-s", str(deadline_s)),
    )


def _provisioner_env(throttled: bool) -> dict[str, str]:
    """The budget set to the sandbox's quota (or out of reach), 10 in flight."""
    requests, window_s = (
        (str(QUOTA_REQUESTS), str(WINDOW_S)) if throttled else UNLIMITED_BUDGET
    )
    return {
        "PROVISIONER_CONCURRENCY": str(CONCURRENCY),
        "PROVISIONER_BUDGET_REQUESTS": requests,
        "PROVISIONER_BUDGET_WINDOW_S": window_s,
    }


def _start_load(
    env: dict[str, str], work: Path, share: float, limit_s: float
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Another client of the token spending ``share`` of the budget on lists."""
    rate_per_s = share * QUOTA_REQUESTS / WINDOW_S
    argv = clients_argv(
        "load",
        *("--rate-per-s", str(rate_per_s)),
        *("--max-duration-s", str(limit_s + _LOAD_SLACK_S)),
    )
    output = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _stop_load
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, env=env, cwd=work
        )
    except BaseException:
        output.close()
        raise
    return process, output


def _stop_load(process: subprocess.Popen[bytes], output: IO[bytes]) -> dict[str, Any]:
    """Stop the load client; its counts (empty if it had to be killed)."""
    try:
        process.terminate()
        try:
            process.wait(timeout=_LOAD_STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    finally:
        output.close()
    return last_json(text)


def _progress(section: str, result: ClientResult) -> None:
    run = result.run
    ended = "timed out" if run.timed_out else f"exit {run.exit_code}"
    print(
        f"[{section}] {LABELS[result.client]}, {result.rows} rows: "
        f"{run.wall_s:.1f} s, {ended}, {result.rate_limited} 429s, "
        f"{result.failed_rows} failed rows",
        file=sys.stderr,
        flush=True,
    )
    if run.exit_code not in (0, None) and run.stderr_tail:
        print(run.stderr_tail[-600:], file=sys.stderr, flush=True)
