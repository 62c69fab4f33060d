"""The command line: validate, plan, apply, export, sandbox.

Exit codes (one table for every command; the README repeats it):

    0  success
    1  unexpected error
    2  changes pending (plan only)
    3  some rows failed or were invalid
    4  bad input or usage: manifest, settings, command line
    5  credentials refused
    6  interrupted by a signal
    7  another run holds the lock
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import structlog
from pydantic import SecretStr

from provisioner import __version__
from provisioner.ci_summary import step_summary_path
from provisioner.client import ApiClient
from provisioner.errors import (
    CredentialsRefusedError,
    InputError,
    ManifestError,
    ProvisionerError,
)
from provisioner.logs import configure_logging
from provisioner.manifest import Manifest, Validation, write_manifest
from provisioner.models import ManifestRow, Namespace
from provisioner.names import NamePolicy
from provisioner.pacing import Pacer
from provisioner.plan import Plan, build_plan, list_accounts
from provisioner.progress import ProgressDisplay
from provisioner.prune import DEFAULT_THRESHOLD
from provisioner.reconcile import Action
from provisioner.retry import RetryPolicy
from provisioner.runner import Runner, RunOptions
from provisioner.settings import Settings, load_settings

log = structlog.get_logger("provisioner.cli")

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CHANGES_PENDING = 2
EXIT_ROWS_FAILED = 3
EXIT_BAD_INPUT = 4
EXIT_INTERRUPTED = 6


@dataclass
class Common:
    """Options every command shares, gathered before settings are loaded."""

    config: Path | None
    overrides: dict[str, Any]
    quiet: bool

    def settings(self) -> Settings:
        """Load settings (flags > environment > TOML > defaults)."""
        return load_settings(self.overrides, self.config)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*options: Decorator) -> Decorator:
    """One decorator applying ``options`` in the order they are listed."""

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


_OFFLINE_OPTIONS = (
    click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML settings file (or PROVISIONER_CONFIG).",
    ),
    click.option("--log-format", type=click.Choice(["auto", "json", "console"])),
    click.option(
        "--log-level", type=click.Choice(["debug", "info", "warning", "error"])
    ),
    click.option("--name-pattern", help="Regular expression names must match."),
    click.option("--quiet", is_flag=True, help="No progress bar or summary."),
)

_NETWORK_OPTIONS = (
    click.option("--account-id", help="Default account (CLOUDFLARE_ACCOUNT_ID)."),
    click.option("--base-url", help="API base URL (CLOUDFLARE_BASE_URL)."),
    click.option(
        "--budget-requests",
        type=int,
        help="Requests allowed per budget window (default 1080, 90% of 1200).",
    ),
    click.option(
        "--budget-window-s", type=float, help="Budget window in seconds (300)."
    ),
    click.option("--concurrency", type=int, help="Requests in flight at most."),
    click.option("--timeout-s", type=float, help="Timeout of one request."),
    click.option(
        "--report-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where the report and journal go (PROVISIONER_REPORT_DIR).",
    ),
    click.option(
        "--metrics-textfile",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Write Prometheus metrics here (node_exporter textfile collector; "
        "name it *.prom).",
    ),
)

_offline_options = _stack(*_OFFLINE_OPTIONS)
_common_options = _stack(*_OFFLINE_OPTIONS, *_NETWORK_OPTIONS)

_sandbox_options = _stack(
    click.option(
        "--sandbox",
        is_flag=True,
        help="Talk to an in-process sandbox of the API instead of Cloudflare.",
    ),
    click.option(
        "--sandbox-state",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Sandbox state file (default: REPORT_DIR/sandbox-state.json).",
    ),
)

_prune_options = _stack(
    click.option(
        "--prune",
        is_flag=True,
        help="Delete namespaces the manifest does not name (and every Worker "
        "in them). Off unless asked for.",
    ),
    click.option(
        "--prune-threshold",
        type=click.FloatRange(0.0, 1.0),
        default=DEFAULT_THRESHOLD,
        show_default=True,
        help="Refuse to prune more than this share of an account's namespaces.",
    ),
    click.option(
        "--force-prune",
        is_flag=True,
        help="Prune even above the threshold (never on an empty manifest).",
    ),
)


def _gather(kwargs: dict[str, Any]) -> Common:
    keys = (
        "account_id",
        "base_url",
        "budget_requests",
        "budget_window_s",
        "concurrency",
        "timeout_s",
        "report_dir",
        "log_format",
        "log_level",
        "name_pattern",
        "metrics_textfile",
    )
    overrides = {key: kwargs.pop(key, None) for key in keys}
    return Common(
        config=kwargs.pop("config", None),
        overrides=overrides,
        quiet=bool(kwargs.pop("quiet", False)),
    )


def _start(kwargs: dict[str, Any]) -> tuple[Common, Settings]:
    """Shared options gathered, settings loaded, logging configured: once."""
    common = _gather(kwargs)
    settings = common.settings()
    _setup_logging(settings)
    return common, settings


def _setup_logging(settings: Settings) -> None:
    configure_logging(
        log_format=settings.log_format,
        level=settings.log_level,
        secrets=settings.secrets(),
    )


def _read_manifest(
    path: Path, settings: Settings, delimiter: str | None
) -> tuple[Manifest, Validation]:
    manifest = Manifest(
        path, policy=NamePolicy(pattern=settings.name_pattern), delimiter=delimiter
    )
    return manifest, manifest.validate()


def _refuse_errors(manifest: Path, validation: Validation, *, hint: str) -> None:
    """Print a manifest's errors and raise ManifestError when it has any."""
    if not validation.errors:
        return
    _echo_problems(validation, errors_only=True)
    raise ManifestError(
        f"{manifest} has {len(validation.errors)} errors and nothing was sent; {hint}."
    )


def _echo_problems(validation: Validation, *, errors_only: bool = False) -> None:
    for problem in validation.problems:
        if errors_only and problem.severity != "error":
            continue
        click.echo(f"{problem.severity}: {problem.render()}", err=True)


class _Commands(click.Group):
    """The command group; `sandbox` (the aiohttp server) loads on first use.

    Importing the server costs every other command start-up time for nothing.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "sandbox"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "sandbox":
            from provisioner.sandbox.cli import sandbox_command

            return sandbox_command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provisioner")
def cli() -> None:
    """Make Cloudflare dispatch namespaces match a manifest, within the API budget."""


# -- validate -----------------------------------------------------------------


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON.")
@click.option("--delimiter", help="CSV delimiter (detected when absent).")
@_offline_options
def validate(manifest: Path, as_json: bool, delimiter: str | None, **kw: Any) -> int:
    """Check a manifest offline and list every problem at once (exit 4 on errors)."""
    _, settings = _start(kw)

    try:
        _, validation = _read_manifest(manifest, settings, delimiter)
    except ManifestError as exc:
        if as_json:
            click.echo(json.dumps(_problems_json(str(exc), exc.problems), indent=2))
            return EXIT_BAD_INPUT
        raise

    if as_json:
        click.echo(json.dumps(_validation_json(validation), indent=2))
    else:
        _echo_problems(validation)
        click.echo(
            f"{manifest}: {validation.rows_total} rows, "
            f"{len(validation.errors)} errors, {len(validation.warnings)} warnings, "
            f"{validation.blank_rows_skipped} blank rows skipped."
        )
    return EXIT_BAD_INPUT if validation.errors else EXIT_OK


def _validation_json(validation: Validation) -> dict[str, Any]:
    return {
        "ok": not validation.errors,
        "rows": validation.rows_total,
        "blank_rows_skipped": validation.blank_rows_skipped,
        "errors": len(validation.errors),
        "warnings": len(validation.warnings),
        "problems": [_problem_json(p) for p in validation.problems],
    }


def _problems_json(message: str, problems: list[Any]) -> dict[str, Any]:
    return {
        "ok": False,
        "error": message,
        "problems": [_problem_json(p) for p in problems],
    }


def _problem_json(problem: Any) -> dict[str, Any]:
    return {
        "severity": problem.severity,
        "file": problem.file,
        "line": problem.line,
        "field": problem.field,
        "code": problem.code,
        "message": problem.message,
    }


# -- plan ---------------------------------------------------------------------


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--delimiter", help="CSV delimiter (detected when absent).")
@_sandbox_options
@_prune_options
@_common_options
def plan(
    manifest: Path,
    as_json: bool,
    delimiter: str | None,
    sandbox: bool,
    sandbox_state: Path | None,
    prune: bool,
    prune_threshold: float,
    force_prune: bool,
    **kw: Any,
) -> int:
    """Show what apply would change; exit 0 when nothing, 2 when changes are pending."""
    _, settings = _start(kw)
    the_manifest, validation = _read_manifest(manifest, settings, delimiter)
    _refuse_errors(manifest, validation, hint="run `provisioner validate` for the list")

    async def go() -> int:
        async with _api(settings, sandbox, sandbox_state) as (client, policy, s):
            the_plan = await build_plan(
                the_manifest,
                validation,
                client,
                policy,
                s.account_id,
                prune=prune,
                prune_threshold=prune_threshold,
                force_prune=force_prune,
            )
        plan_json = the_plan.to_json()
        if as_json:
            click.echo(json.dumps(plan_json, indent=2))
        else:
            click.echo(the_plan.render_text())
        if step_summary_path() is not None:
            from provisioner.publish import publish_plan

            publish_plan(plan_json)
        return _plan_exit_code(the_plan)

    return run_async(go())


def _plan_exit_code(the_plan: Plan) -> int:
    if the_plan.credentials_refused:
        return CredentialsRefusedError.exit_code
    if the_plan.refused:
        return EXIT_ROWS_FAILED
    if the_plan.prune_refused or any(
        d.action is Action.CONFLICT for d in the_plan.decisions
    ):
        return EXIT_BAD_INPUT
    return EXIT_CHANGES_PENDING if the_plan.has_changes else EXIT_OK


# -- apply --------------------------------------------------------------------


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--delimiter", help="CSV delimiter (detected when absent).")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Provision the valid rows; report invalid ones as `invalid`.",
)
@click.option(
    "--resume/--fresh",
    default=None,
    help="Resume an unfinished journal of the same manifest (the default), or "
    "start a new one. A journal of another manifest is never resumed: its "
    "unsettled calls are carried into the new run by name and looked up.",
)
@_sandbox_options
@_prune_options
@_common_options
def apply(
    manifest: Path,
    delimiter: str | None,
    skip_invalid: bool,
    resume: bool | None,
    sandbox: bool,
    sandbox_state: Path | None,
    prune: bool,
    prune_threshold: float,
    force_prune: bool,
    **kw: Any,
) -> int:
    """Create what the manifest asks for and write the reconciliation report."""
    common, settings = _start(kw)
    the_manifest, validation = _read_manifest(manifest, settings, delimiter)
    if not skip_invalid:
        _refuse_errors(manifest, validation, hint="fix them, or pass --skip-invalid")

    async def go() -> int:
        async with _api(settings, sandbox, sandbox_state) as (client, policy, s):
            progress = ProgressDisplay(
                total=validation.rows_total, enabled=not common.quiet
            )
            runner = Runner(
                manifest=the_manifest,
                validation=validation,
                client=client,
                policy=policy,
                report_dir=s.report_dir,
                default_account=s.account_id,
                concurrency=s.concurrency,
                options=RunOptions(
                    skip_invalid=skip_invalid,
                    resume=resume,
                    grace_s=s.grace_s,
                    on_outcome=progress.advance,
                    prune=prune,
                    prune_threshold=prune_threshold,
                    force_prune=force_prune,
                    lock_dir=s.lock_dir,
                ),
            )
            with progress, _signals(runner):
                result = await runner.run()
            if s.metrics_textfile or s.pushgateway_url or step_summary_path():
                from provisioner.publish import publish_run

                await publish_run(s, result.summary, result.journal_path)
        if not common.quiet:
            click.echo(_summary_line(result.summary, result.report.json_path))
        return result.exit_code

    return run_async(go())


# -- export -------------------------------------------------------------------


@cli.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Manifest file to write (.csv, .yaml or .yml).",
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    help="Account to export (repeatable); default: the configured account. "
    "With several, each row carries its account_id.",
)
@_sandbox_options
@_common_options
def export(
    output: Path,
    accounts: tuple[str, ...],
    sandbox: bool,
    sandbox_state: Path | None,
    **kw: Any,
) -> int:
    """Write the account's namespaces as a manifest that apply takes back unchanged."""
    common, settings = _start(kw)
    fmt = _format_of(output)
    policy = NamePolicy(pattern=settings.name_pattern)
    if not output.parent.is_dir():
        raise click.UsageError(f"--output {output}: the directory does not exist.")
    for account in accounts:
        if len(account) != 32 or account.strip("0123456789abcdef"):
            raise click.UsageError(
                f"--account {account!r}: must be 32 lowercase hexadecimal characters."
            )

    async def go() -> int:
        async with _api(settings, sandbox, sandbox_state) as (client, retry, s):
            wanted = list(accounts) or [s.require_account()]
            views = await list_accounts(client, retry, wanted)
        refused = {a: v.refused for a, v in views.items() if v.refused is not None}
        if refused:
            for account, error in refused.items():
                click.echo(f"error: account {account}: {error}", err=True)
            credentials = any(
                isinstance(e, CredentialsRefusedError) for e in refused.values()
            )
            return (
                CredentialsRefusedError.exit_code if credentials else EXIT_ROWS_FAILED
            )

        rows: list[ManifestRow] = []
        for account, view in sorted(views.items()):
            for namespace in sorted(view.namespaces.values(), key=_by_name):
                if not policy.accepts(namespace.namespace_name):
                    click.echo(
                        f"warning: {namespace.namespace_name!r} in {account} is "
                        "refused by the name policy; apply will refuse this row.",
                        err=True,
                    )
                rows.append(
                    ManifestRow(
                        line=len(rows) + 2,
                        namespace=namespace.namespace_name,
                        account_id=account if len(views) > 1 else None,
                        trusted_workers=bool(namespace.trusted_workers),
                    )
                )
        write_manifest(output, rows, fmt)
        if not common.quiet:
            click.echo(f"Exported {len(rows)} namespaces to {output}.")
        return EXIT_OK

    return run_async(go())


def _by_name(namespace: Namespace) -> str:
    return namespace.namespace_name


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise click.UsageError(f"--output {path}: use a .csv, .yaml or .yml file name.")


def _summary_line(summary: dict[str, Any], report: Path) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in summary["outcomes"].items() if n)
    return (
        f"{summary['rows']} rows: {counts or 'none'}. "
        f"{summary['requests_sent']} requests, {summary['retries']} retries, "
        f"{summary['rate_limited']} rate-limited, {summary['duration_s']} s. "
        f"Report: {report}"
    )


@contextlib.contextmanager
def _signals(runner: Runner) -> Any:
    """First SIGINT/SIGTERM: stop gracefully. Second: exit at once (exit 6)."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received == 1:
            log.warning("signal_received", signal=signal.Signals(signum).name)
            runner.request_stop()
            return
        runner.flush_journal_now()
        os._exit(EXIT_INTERRUPTED)

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
            signal.signal(signum, previous[signum])


@contextlib.asynccontextmanager
async def _api(
    settings: Settings, sandbox: bool, sandbox_state: Path | None
) -> AsyncIterator[tuple[ApiClient, RetryPolicy, Settings]]:
    """A paced client on the configured API, or on an in-process sandbox."""
    async with contextlib.AsyncExitStack() as stack:
        if sandbox:
            from provisioner.sandbox import SandboxConfig, SandboxServer

            state = sandbox_state or settings.report_dir / "sandbox-state.json"
            state.parent.mkdir(parents=True, exist_ok=True)
            server = await stack.enter_async_context(
                SandboxServer(SandboxConfig(state_file=state))
            )
            settings = _on_sandbox(settings, server)
            log.info("sandbox_embedded", base_url=server.base_url, state=str(state))
        settings.require_credentials()

        quota, window_s = settings.budget
        pacer = Pacer(quota, window_s, max_pause_s=settings.retry_deadline_s)
        client = await stack.enter_async_context(
            ApiClient(
                base_url=settings.base_url,
                auth_headers=settings.auth_headers(),
                pacer=pacer,
                timeout_s=settings.timeout_s,
                concurrency=settings.concurrency,
            )
        )
        policy = RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            deadline_s=settings.retry_deadline_s,
            backoff_initial_s=settings.retry_backoff_initial_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )
        yield client, policy, settings


def _on_sandbox(settings: Settings, server: Any) -> Settings:
    """Point the run at the embedded sandbox, with the sandbox's own budget."""
    config = server.config
    return settings.model_copy(
        update={
            "base_url": server.base_url,
            "api_token": SecretStr(config.token),
            "email": None,
            "api_key": None,
            "account_id": settings.account_id or config.accounts[0],
            "budget_requests": config.quota or None,
            "budget_window_s": config.window_s,
        }
    )


# -- entry point ----------------------------------------------------------------


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine on uvloop where it is installed (not on
    Windows), else on asyncio's own loop: the same API, less CPU per call."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the code of the table above."""
    # As process 1 of a container, a signal without a handler is ignored.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    sys.exit(run(argv))


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_INTERRUPTED)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (for tests)."""
    try:
        code = cli.main(args=argv, prog_name="provisioner", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        return EXIT_BAD_INPUT
    except click.UsageError as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_INTERRUPTED
    except ManifestError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except ProvisionerError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:
        log.exception("unexpected_error", error_type=type(exc).__name__)
        click.echo(f"unexpected error: {type(exc).__name__}: {exc}", err=True)
        return EXIT_UNEXPECTED
    return int(code or 0)
