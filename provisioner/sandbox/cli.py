"""``provisioner sandbox``: serve the local imitation of Cloudflare's API."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner.errors import SettingsError
from provisioner.sandbox.config import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EMAIL,
    DEFAULT_QUOTA,
    DEFAULT_TOKEN,
    DEFAULT_WINDOW_S,
    FaultRates,
    SandboxConfig,
)
from provisioner.sandbox.server import DEFAULT_PORT, LOOPBACK, run_sandbox

_FAULT_HELP = (
    "Inject a fault with probability P in [0, 1] per API request; repeatable. "
    f"KIND is one of: {', '.join(FaultRates.kinds())}. The commit_* kinds "
    "commit a mutation and then drop the answer (commit_then_close) or send it "
    "after --slow-delay-s (commit_then_delay); the others commit nothing. "
    "Example: --fault close=0.05 --fault html_502=0.01."
)


def parse_faults(
    ctx: click.Context | None, param: click.Parameter | None, values: tuple[str, ...]
) -> FaultRates:
    """Turn repeated ``KIND=P`` options into FaultRates (a click callback)."""
    rates: dict[str, float] = {}
    for value in values:
        kind, sep, rate = value.partition("=")
        try:
            if not sep:
                raise ValueError
            rates[kind.strip()] = float(rate)
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not KIND=P, e.g. close=0.05.", ctx, param
            ) from None
    try:
        return FaultRates.from_mapping(rates)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.command("sandbox")
@click.option("--host", default=LOOPBACK, show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to bind; 0 picks a free one.",
)
@click.option(
    "--quota",
    type=click.IntRange(min=0),
    default=DEFAULT_QUOTA,
    show_default=True,
    help="Requests per window per credential; 0 turns rate limiting off.",
)
@click.option(
    "--window-s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_WINDOW_S,
    show_default=True,
    help="Rate-limit window in seconds; Cloudflare's real one is 300.",
)
@click.option(
    "--lockout-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Lockout after going over quota, in seconds  [default: one window]",
)
@click.option("--token", default=DEFAULT_TOKEN, show_default=True, help="API token.")
@click.option(
    "--accept-any-token", is_flag=True, help="Accept every non-empty bearer token."
)
@click.option("--email", default=DEFAULT_EMAIL, show_default=True, help="X-Auth-Email.")
@click.option("--key", default=DEFAULT_API_KEY, show_default=True, help="X-Auth-Key.")
@click.option(
    "--account",
    "accounts",
    multiple=True,
    default=(DEFAULT_ACCOUNT,),
    show_default=True,
    help="Account id served; repeatable.",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file keeping namespaces between runs; read at start if present.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of fault draws."
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=P",
    callback=parse_faults,
    help=_FAULT_HELP,
)
@click.option(
    "--revoke-after",
    type=click.IntRange(min=0),
    default=None,
    help="Answer 403 to every call of a credential after its Nth one.",
)
@click.option(
    "--slow-delay-s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="How late commit_then_delay answers.",
)
def sandbox_command(
    host: str,
    port: int,
    quota: int,
    window_s: float,
    lockout_s: float | None,
    token: str,
    accept_any_token: bool,
    email: str,
    key: str,
    accounts: tuple[str, ...],
    state_file: Path | None,
    seed: int,
    faults: FaultRates,
    revoke_after: int | None,
    slow_delay_s: float,
) -> None:
    """Serve a local imitation of Cloudflare's dispatch-namespace API.

    It keeps Cloudflare's envelope, error codes, both authentication schemes
    and its rate limit (1200 requests per window, then a lockout with 429),
    with the window shortened to 5 s by default. Counters are served at
    /__sandbox/stats. It stops on Ctrl-C or SIGTERM.
    """
    try:
        config = SandboxConfig(
            accounts=accounts,
            token=token,
            email=email,
            api_key=key,
            accept_any_token=accept_any_token,
            quota=quota,
            window_s=window_s,
            lockout_s=lockout_s,
            faults=faults,
            seed=seed,
            revoke_after=revoke_after,
            slow_delay_s=slow_delay_s,
            state_file=state_file,
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    run_sandbox(config, host=host, port=port)


if __name__ == "__main__":
    sandbox_command()
