"""The manifest corpus: each file in tests/manifests/ gives its recorded outcome.

tests/manifests/cases.yaml describes every case; its header explains the keys.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.errors import ManifestError, Problem, SettingsError
from provisioner.manifest import Manifest, ManifestLimits, Validation
from provisioner.models import ManifestRow
from provisioner.names import NamePolicy
from provisioner.plan import accounts_of, wanted_accounts

CORPUS = Path(__file__).parent / "manifests"
CASES: list[dict[str, Any]] = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def _open(case: dict[str, Any]) -> Manifest:
    options = case.get("options", {})
    return Manifest(
        CORPUS / case["file"],
        policy=NamePolicy(options["pattern"]) if "pattern" in options else NamePolicy(),
        limits=ManifestLimits(**options.get("limits", {})),
        delimiter=options.get("delimiter"),
    )


def _row(row: ManifestRow) -> dict[str, Any]:
    """A row as the corpus writes it: fields that are None or empty left out."""
    return {k: v for k, v in dataclasses.asdict(row).items() if v not in (None, {})}


def _summary(problem: Problem) -> list[Any]:
    return [problem.line, problem.field, problem.severity, problem.code]


def test_corpus_is_complete() -> None:
    """Every file in the corpus has a case, every case a file, and there are 30+."""
    files = {p.name for p in CORPUS.iterdir() if not p.name.startswith(".")}
    described = {case["file"] for case in CASES}

    assert files - {"cases.yaml"} == described
    assert len(CASES) >= 30


def _read(
    case: dict[str, Any],
) -> tuple[ManifestError | None, Validation | None, list[ManifestRow]]:
    """Validate and stream a case; a refusal is returned, anything else raises."""
    try:
        manifest = _open(case)
        validation = manifest.validate()
        rows = list(manifest.rows())
    except ManifestError as exc:
        return exc, None, []
    return None, validation, rows


@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_case(case: dict[str, Any]) -> None:
    """A corpus file gives exactly its recorded problems and rows; nothing but
    ManifestError ever escapes."""
    path = CORPUS / case["file"]

    refusal, validation, rows = _read(case)

    if refusal is not None:
        assert case.get("refused"), f"refused unexpectedly: {refusal}"
        assert str(refusal).startswith(str(path))
        problems = refusal.problems
    else:
        assert validation is not None
        assert not case.get("refused"), "accepted, but the case says refused"
        assert [_row(row) for row in rows] == case["rows"]
        assert validation.rows_total == case["rows_total"]
        assert validation.blank_rows_skipped == case["blank_rows_skipped"]
        duplicates = {str(k): v for k, v in validation.duplicate_of.items()}
        assert duplicates == case.get("duplicate_of", {})
        assert {r.line for r in rows}.isdisjoint(validation.invalid_lines)
        json.dumps(validation.to_dict())
        problems = validation.problems
    assert [_summary(p) for p in problems] == case["problems"]
    rendered = "\n".join(p.render() for p in problems)
    for text in case.get("mentions", []):
        assert text in rendered
    for problem in problems:
        assert problem.file == str(path)
        assert problem.message.endswith(".")


@pytest.mark.parametrize("default", [None, "f" * 32])
@pytest.mark.parametrize("case", CASES, ids=[case["file"] for case in CASES])
def test_counted_accounts_match_a_pass_over_the_rows(
    case: dict[str, Any], default: str | None
) -> None:
    """What validation counts per account equals a pass over the valid rows,
    with or without a default account, refusals included."""
    refusal, validation, rows = _read(case)
    if refusal is not None:
        return
    assert validation is not None
    manifest = _open(case)
    manifest.validate()

    def outcome(compute: Any) -> Any:
        try:
            return compute()
        except SettingsError as exc:
            return str(exc)

    counted = outcome(lambda: wanted_accounts(manifest, validation, default))
    streamed = outcome(lambda: accounts_of(rows, default, source=str(manifest.path)))
    assert counted == streamed
