"""Tests for the name policy: the URL-safe floor and the configurable pattern."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.errors import SettingsError
from provisioner.names import DEFAULT_PATTERN, NamePolicy, unsafe_reason, url_safe

FORBIDDEN = set("/?#%\\")

# Text that leans towards the characters the floor cares about.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("abcAB09-_./?#%\\ \t\n\x00\x7f\u200b\u00a0\u0430é")),
        st.characters(),
    ),
    max_size=70,
)


@pytest.mark.parametrize(
    "name",
    ["a", "0", "acme", "acme-prod", "tenant_0001", "a" * 63, "9to5", "x-1_y"],
)
def test_default_policy_accepts_plain_names(name: str) -> None:
    """Lowercase letters, digits, '-' and '_' of 1 to 63 characters are accepted."""
    policy = NamePolicy()

    assert policy.accepts(name)
    assert policy.problems(name) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "is empty"),
        (" acme", "starts with a space; names are never trimmed"),
        ("acme ", "ends with a space; names are never trimmed"),
        ("ac me", "U+0020 (SPACE)"),
        ("ac\tme", "U+0009 (TAB)"),
        ("ac\u200bme", "invisible character U+200B (ZERO WIDTH SPACE)"),
        ("\ufeffacme", "U+FEFF"),
        ("ac\x07me", "control character U+0007"),
        ("ac\x00me", "U+0000 (NUL)"),
        ("\u0430cme", "U+0430 (CYRILLIC SMALL LETTER A)"),
        ("café", "non-ASCII character 'é' U+00E9"),
        ("a/b", "contains '/'"),
        ("a?b", "contains '?'"),
        ("a#b", "contains '#'"),
        ("100%", "contains '%'"),
        ("a\\b", "contains '\\\\'"),
        (".", "only of dots"),
        ("..", "only of dots"),
        ("...", "only of dots"),
        ("   ", "only whitespace"),
        ("Acme", "write 'acme'"),
        ("-acme", "start and end with a letter or a digit"),
        ("acme_", "start and end with a letter or a digit"),
        ("a.b", "contains '.'"),
        ("a+b@c", "contains '+', '@'"),
        ("a" * 64, "64 characters long; the limit is 63"),
    ],
)
def test_default_policy_explains_each_refusal(name: str, expected: str) -> None:
    """A refused name gets a sentence naming the fault, code points included."""
    problems = NamePolicy().problems(name)

    assert problems, name
    assert any(expected in p for p in problems), problems
    assert all(p[0].isupper() and p.endswith(".") for p in problems)
    assert not NamePolicy().accepts(name)


def test_invisible_characters_are_shown_escaped() -> None:
    """Messages show the name with invisible characters escaped, never raw."""
    (problem,) = NamePolicy().problems("ac\u200bme")

    assert "'ac\\u200bme'" in problem
    assert "\u200b" not in problem


def test_whitespace_is_reported_at_both_ends_and_inside() -> None:
    """Each whitespace fault of a name is listed, not only the first."""
    problems = NamePolicy().problems(" a b ")

    assert len(problems) == 3


def test_distinct_bad_characters_are_capped() -> None:
    """A name full of bad characters yields a short list, not one line per char."""
    problems = NamePolicy().problems("/?#%\\\x01\x02\x03\x04")

    assert len(problems) == 5


@pytest.mark.parametrize(
    "name", ["a/b", "a b", "..", "", "a\u200bb", "é", "a%2F", "\\", "x\ny"]
)
def test_floor_holds_whatever_the_pattern(name: str) -> None:
    """A pattern that allows anything still never accepts an unsafe name."""
    policy = NamePolicy(pattern=r".*")

    assert not policy.accepts(name)
    assert policy.problems(name) == [unsafe_reason(name)]


def test_custom_pattern_is_applied_to_the_whole_name() -> None:
    """A configured pattern must match the whole name, and its refusal says so."""
    policy = NamePolicy(pattern=r"[A-Z]+")

    assert policy.accepts("ACME")
    assert not policy.accepts("ACMEx")
    assert "does not match the name pattern '[A-Z]+'" in policy.problems("ACMEx")[0]


def test_a_broken_pattern_is_a_settings_error() -> None:
    """An invalid regular expression in the settings raises SettingsError."""
    with pytest.raises(SettingsError, match="not a valid regular expression"):
        NamePolicy(pattern="[a-z")


def test_policies_compare_by_pattern() -> None:
    """Two policies with one pattern are equal and hash alike (usable as keys)."""
    assert NamePolicy() == NamePolicy(DEFAULT_PATTERN)
    assert hash(NamePolicy()) == hash(NamePolicy(DEFAULT_PATTERN))


def test_unsafe_reason_is_none_for_safe_names() -> None:
    """unsafe_reason returns None exactly when url_safe is true."""
    assert unsafe_reason("Acme.Prod") is None
    assert url_safe("Acme.Prod")
    assert unsafe_reason("a/b") is not None


@given(tricky_text)
def test_url_safe_names_hold_no_forbidden_character(name: str) -> None:
    """Every name url_safe accepts is non-empty printable ASCII, without / ? # % \\
    or whitespace, and not made only of dots."""
    if not url_safe(name):
        assert unsafe_reason(name) is not None
        return

    assert name
    assert not FORBIDDEN.intersection(name)
    assert all("!" <= char <= "~" for char in name)
    assert set(name) != {"."}
    assert unsafe_reason(name) is None


@given(tricky_text)
def test_default_policy_is_within_the_floor(name: str) -> None:
    """Whatever the default policy accepts, the floor accepts too."""
    if NamePolicy().accepts(name):
        assert url_safe(name)


@given(tricky_text)
def test_problems_are_empty_exactly_when_accepted(name: str) -> None:
    """problems() and accepts() never disagree, under any pattern."""
    for policy in (NamePolicy(), NamePolicy(pattern=r".*")):
        assert (policy.problems(name) == []) == policy.accepts(name)


# Examples capped: hypothesis builds names from the pattern's {0,61} slowly.
@settings(max_examples=40)
@given(st.from_regex(DEFAULT_PATTERN, fullmatch=True))
def test_every_name_the_pattern_describes_is_accepted(name: str) -> None:
    """Names generated from the default pattern are all accepted and URL-safe."""
    assert NamePolicy().accepts(name)
    assert url_safe(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a",
        "a" * 63,
        "a" * 64,
        " acme",
        "acme ",
        "Acme",
        "\u0430cme",
        "ac\u200bme",
        "\uff41cme",
        "\u0663",
        "a.b",
        "..",
        "a%2F",
        "a/b",
        "acme\n",
        "-acme",
        "acme_",
        "a_b-c",
    ],
)
def test_default_policy_decides_as_floor_and_pattern_together(name: str) -> None:
    """The default policy's one match accepts exactly what floor and pattern do."""
    full_check = url_safe(name) and re.fullmatch(DEFAULT_PATTERN, name) is not None

    assert NamePolicy().accepts(name) == full_check


@given(tricky_text)
def test_default_policy_decides_as_floor_and_pattern_together_anywhere(
    name: str,
) -> None:
    """On any text, the default policy's one match agrees with the full check."""
    full_check = url_safe(name) and re.fullmatch(DEFAULT_PATTERN, name) is not None

    assert NamePolicy().accepts(name) == full_check
