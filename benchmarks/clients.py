"""The clients `provisioner apply` is compared with, one per process.

Run as a script so that the parent measures this process's CPU and memory
alone:

    python benchmarks/clients.py sdk  --manifest M --deadline-s 175
    python benchmarks/clients.py bare --manifest M --deadline-s 175
    python benchmarks/clients.py load --rate-per-s 12 --max-duration-s 210

``sdk`` creates every name of the manifest with the official SDK
(``cloudflare`` 5.x, its default retries); ``bare`` POSTs each name once with
aiohttp, no retries. Both keep at most ``--concurrency`` calls in flight with
an ``asyncio.Semaphore`` under ``asyncio.gather``, as a script written in an
afternoon would. ``load`` is another client of the same token: it sends list
calls evenly paced until SIGTERM or its time limit.

Each prints one JSON line of counts when done. The base URL, account and
token come from CLOUDFLARE_BASE_URL, CLOUDFLARE_ACCOUNT_ID and
CLOUDFLARE_API_TOKEN. This script imports neither ``provisioner`` nor, for
``bare`` and ``load``, ``cloudflare``: their import cost is not theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

# A list call still unanswered after this long is counted as timed out.
REQUEST_TIMEOUT_S = 30.0
# The load client skips a tick rather than pile up more calls than this.
LOAD_MAX_IN_FLIGHT = 50
# Calls the load client waits for after being told to stop.
LOAD_DRAIN_S = 5.0


def read_names(manifest: str) -> list[str]:
    """The ``namespace`` column of a CSV manifest, in order."""
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [row["namespace"] for row in csv.DictReader(handle)]


def collection_url() -> str:
    """The dispatch-namespace collection of the configured account."""
    base_url = os.environ["CLOUDFLARE_BASE_URL"].rstrip("/")
    account_id = os.environ["CLOUDFLARE_ACCOUNT_ID"]
    return f"{base_url}/accounts/{account_id}/workers/dispatch/namespaces"


def bearer_headers() -> dict[str, str]:
    """The token's Authorization header."""
    return {"Authorization": f"Bearer {os.environ['CLOUDFLARE_API_TOKEN']}"}


async def gather_bounded(
    names: list[str],
    create: Callable[[str], Awaitable[None]],
    *,
    concurrency: int,
    deadline_s: float,
) -> bool:
    """Run ``create`` for every name, ``concurrency`` at a time; False on timeout."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with semaphore:
            await create(name)

    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*(one(name) for name in names))
    except TimeoutError:
        return False
    return True


async def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    """POST each name once; count answers by status."""
    names = read_names(args.manifest)
    counts: Counter[str] = Counter()
    url = collection_url()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async with aiohttp.ClientSession(
        headers=bearer_headers(), timeout=timeout
    ) as session:

        async def create(name: str) -> None:
            try:
                async with session.post(url, json={"name": name}) as response:
                    await response.read()
                    counts[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                counts[type(exc).__name__] += 1

        finished = await gather_bounded(
            names, create, concurrency=args.concurrency, deadline_s=args.deadline_s
        )

    return {"client": "bare", "names": len(names), "finished": finished, **counts}


async def run_sdk(args: argparse.Namespace) -> dict[str, Any]:
    """Create each name with the official SDK and its default retries."""
    import cloudflare  # here, so that only this client pays for the import

    names = read_names(args.manifest)
    counts: Counter[str] = Counter()
    account_id = os.environ["CLOUDFLARE_ACCOUNT_ID"]
    client = cloudflare.AsyncCloudflare(
        api_token=os.environ["CLOUDFLARE_API_TOKEN"],
        base_url=os.environ["CLOUDFLARE_BASE_URL"],
    )
    namespaces = client.workers_for_platforms.dispatch.namespaces

    async def create(name: str) -> None:
        try:
            created = await namespaces.create(account_id=account_id, name=name)
        except cloudflare.APIStatusError as exc:
            counts[str(exc.status_code)] += 1
        except cloudflare.APIConnectionError as exc:
            counts[type(exc).__name__] += 1
        else:
            # The SDK returns None for a 200 whose body says success: false.
            counts["200" if created is not None else "200 without result"] += 1

    try:
        finished = await gather_bounded(
            names, create, concurrency=args.concurrency, deadline_s=args.deadline_s
        )
    finally:
        await client.close()

    return {"client": "sdk", "names": len(names), "finished": finished, **counts}


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    """List calls at ``rate_per_s``, evenly paced, until SIGTERM or the limit."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    counts: Counter[str] = Counter()
    in_flight: set[asyncio.Task[None]] = set()
    interval_s = 1.0 / args.rate_per_s
    max_calls = int(args.rate_per_s * args.max_duration_s)
    url = collection_url()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async with aiohttp.ClientSession(
        headers=bearer_headers(), timeout=timeout
    ) as session:

        async def list_once() -> None:
            try:
                async with session.get(url) as response:
                    await response.read()
                    counts[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                counts[type(exc).__name__] += 1

        started_s = loop.time()
        for tick in range(max_calls):
            due_s = started_s + tick * interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due_s - loop.time()))
            if stop.is_set():
                break
            if len(in_flight) >= LOAD_MAX_IN_FLIGHT:
                counts["skipped"] += 1
                continue
            counts["sent"] += 1
            task = asyncio.create_task(list_once())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        elapsed_s = loop.time() - started_s
        if in_flight:
            await asyncio.wait(in_flight, timeout=LOAD_DRAIN_S)

    return {"client": "load", "elapsed_s": round(elapsed_s, 3), **counts}


RUNNERS = {"bare": run_bare, "sdk": run_sdk, "load": run_load}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(RUNNERS))
    parser.add_argument("--manifest", help="CSV manifest (sdk, bare).")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=175.0)
    parser.add_argument("--rate-per-s", type=float, default=12.0)
    parser.add_argument("--max-duration-s", type=float, default=210.0)
    args = parser.parse_args(argv)
    if args.kind != "load" and args.manifest is None:
        parser.error(f"{args.kind} needs --manifest")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one client and print its counts as one JSON line."""
    args = parse_args(argv)
    started_s = time.monotonic()

    counts = asyncio.run(RUNNERS[args.kind](args))

    counts["run_s"] = round(time.monotonic() - started_s, 3)
    print(json.dumps(counts, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
