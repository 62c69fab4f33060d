"""The cached-second timestamps of journal records and log lines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provisioner import timestamps


@pytest.mark.parametrize(
    ("epoch_s", "ms", "us"),
    [
        (0.0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.000000Z"),
        (1_796_363_022.25, "2026-12-04T05:43:42.250Z", "2026-12-04T05:43:42.250000Z"),
        (1_796_363_022.999999, "2026-12-04T05:43:42.999Z", None),
    ],
)
def test_stamps_are_rfc3339_utc(
    monkeypatch: pytest.MonkeyPatch, epoch_s: float, ms: str, us: str | None
) -> None:
    """Each form formats the given instant in UTC, fraction truncated."""
    monkeypatch.setattr(timestamps, "_CLOCK", timestamps._Clock())
    monkeypatch.setattr(timestamps.time, "time", lambda: epoch_s)

    assert timestamps.utc_now_ms() == ms
    if us is not None:
        assert timestamps.utc_now_us() == us


def test_a_new_second_is_formatted_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached second is replaced as soon as the clock passes it."""
    monkeypatch.setattr(timestamps, "_CLOCK", timestamps._Clock())
    now = [86_399.5]
    monkeypatch.setattr(timestamps.time, "time", lambda: now[0])

    first = timestamps.utc_now_ms()
    now[0] = 86_400.001
    second = timestamps.utc_now_ms()

    assert (first, second) == (
        "1970-01-01T23:59:59.500Z",
        "1970-01-02T00:00:00.001Z",
    )


def test_stamps_agree_with_datetime() -> None:
    """A stamp parses back to within a second of datetime's own now."""
    stamp = timestamps.utc_now_us()
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 1
