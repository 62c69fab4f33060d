"""Applying every corpus manifest: no traceback, and no call for an invalid row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sandbox_fixtures import ACCOUNT, TOKEN_HEADERS, MakeSandbox
from test_manifest_corpus import CASES, _open

from provisioner.client import ApiClient
from provisioner.errors import ManifestError
from provisioner.pacing import Pacer
from provisioner.retry import RetryPolicy
from provisioner.runner import Runner, RunOptions


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
async def test_apply_sends_nothing_for_invalid_rows(
    case: dict[str, Any], tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    """--skip-invalid creates only valid rows' names; refused files send nothing."""
    server = await make_sandbox(quota=0)
    try:
        manifest = _open(case)
        validation = manifest.validate()
    except ManifestError:
        assert case.get("refused") is True
        return  # the CLI exits 4 here, before it opens a connection

    async with ApiClient(
        base_url=server.base_url, auth_headers=TOKEN_HEADERS, pacer=Pacer(10_000, 1.0)
    ) as client:
        runner = Runner(
            manifest=manifest,
            validation=validation,
            client=client,
            policy=RetryPolicy(max_attempts=1),
            report_dir=tmp_path / "reports",
            default_account=ACCOUNT,
            concurrency=4,
            options=RunOptions(skip_invalid=True, lock_dir=tmp_path),
        )
        result = await runner.run()

    valid = {row["namespace"] for row in case.get("rows", [])}
    held = {ns.namespace_name for ns in server.store.list_for(ACCOUNT)}
    assert held <= valid
    stats = server.stats()
    assert stats["creates_committed"] + stats["duplicate_creates"] <= len(valid)
    assert result.summary["outcomes"]["invalid"] == len(validation.invalid_lines)
