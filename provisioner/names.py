"""The name policy: which namespace names provisioner is willing to send.

A dispatch namespace name goes into the URL path of every get, update and delete
call (``…/namespaces/{name}``), and the API says only that a name is non-empty.
So the tool keeps its own policy, in two layers:

1. **The floor** (``url_safe``), which no setting can lower. A name is never sent
   when it is empty, made only of dots (HTTP libraries collapse ``.`` and ``..``
   path segments), or holds any of ``/ ? # %`` or ``\\`` (they end or reshape
   the path), whitespace, a control character, an invisible character, or any
   other non-ASCII character (look-alike letters such as the Cyrillic small a,
   U+0430, are how two names that print the same end up different).
2. **The pattern** (``NamePolicy.pattern``, configurable in the settings). The
   default accepts 1 to 63 characters of lowercase ASCII letters, digits, ``-``
   and ``_``, starting and ending with a letter or digit: a name that reads the
   same in a URL, a file name, a shell and a metrics label.

A name is accepted when it passes both. Names are never trimmed or lowercased on
the user's behalf: ``" acme"`` and ``"Acme"`` are refused with a message saying
what to change, because a silent fix would provision a namespace the manifest
does not name. Messages show a name with Python's ``repr``, so invisible
characters appear as escapes, and name each offending character by its code
point (``U+200B ZERO WIDTH SPACE``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from provisioner.errors import SettingsError

DEFAULT_PATTERN = r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$"
DEFAULT_MAX_LENGTH = 63

# Characters that change what a URL path means when a name is put into it as is.
_URL_SPECIAL = {
    "/": "which would split the URL path",
    "?": "which would start a URL query",
    "#": "which would start a URL fragment",
    "%": "which URLs read as the start of an escape",
    "\\": "which some URL parsers read as '/'",
}

# What printable ASCII may still not hold; searching allocates nothing on a miss,
# which keeps the check cheap for the million names of a large manifest.
_FLOOR_BAD = re.compile(r"[/?#%\\ ]")

# Letters that render as nothing although Unicode files them as ordinary letters.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")

# Unicode gives control characters no names; these are the ones people meet.
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\x0b": "VERTICAL TAB",
    "\x0c": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
}

# How many distinct offending characters one name's problems list before stopping.
_MAX_CHARS_REPORTED = 5


def describe_char(char: str) -> str:
    """Name one character by code point, e.g. ``U+200B (ZERO WIDTH SPACE)``."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"

    return f"{code} ({name})" if name else code


def _char_problem(shown: str, char: str) -> str | None:
    """Why one character may not be in a name, or None if the floor allows it."""
    if char in _URL_SPECIAL:
        return f"the name {shown} contains {char!r}, {_URL_SPECIAL[char]}"
    if char.isascii() and char.isprintable() and not char.isspace():
        return None

    category = unicodedata.category(char)
    what = describe_char(char)
    if char.isspace():
        return f"the name {shown} contains the whitespace character {what}"
    if category == "Cc":
        return f"the name {shown} contains the control character {what}"
    if category in {"Cf", "Mn", "Me", "Cs", "Co", "Cn"} or char in _BLANK_LETTERS:
        return (
            f"the name {shown} contains the invisible character {what}; "
            "delete it (retyping the name by hand removes it)"
        )
    return (
        f"the name {shown} contains the non-ASCII character {char!r} {what}; "
        "names are ASCII only"
    )


def _edge_space_problems(name: str, shown: str) -> list[str]:
    """Problems for whitespace at either end, which people cannot see."""
    problems = []
    if name[:1].isspace():
        what = "a space" if name[0] == " " else describe_char(name[0])
        problems.append(
            f"the name {shown} starts with {what}; names are never trimmed, "
            "so remove it"
        )
    if len(name) > 1 and name[-1:].isspace():
        what = "a space" if name[-1] == " " else describe_char(name[-1])
        problems.append(
            f"the name {shown} ends with {what}; names are never trimmed, so remove it"
        )

    return problems


def _floor_ok(name: str) -> bool:
    """The floor as one fast test: printable ASCII, nothing special, not dots."""
    return (
        name.isascii()
        and name.isprintable()
        and _FLOOR_BAD.search(name) is None
        and name.count(".") != len(name)
    )


def _sentences(fragments: list[str]) -> list[str]:
    """Fragments such as ``the name 'x' contains …`` as full sentences."""
    return [f"{text[:1].upper()}{text[1:]}." for text in fragments]


def _floor_problems(name: str) -> list[str]:
    """Every reason the floor refuses ``name``; empty when it is URL-safe."""
    return _sentences(_floor_fragments(name))


def _floor_fragments(name: str) -> list[str]:
    if name == "":
        return ["the name is empty; write a name"]
    if _floor_ok(name):
        return []
    if name.count(".") == len(name):
        return [
            f"the name {name!r} is made only of dots, which a URL path reads "
            "as a directory step; choose a name with letters or digits"
        ]
    shown = repr(name)
    if name.isspace():
        return [f"the name {shown} is only whitespace; write a name"]

    problems = _edge_space_problems(name, shown)
    inner = name.strip()
    seen: set[str] = set()
    for char in inner:
        if char in seen:
            continue
        seen.add(char)
        problem = _char_problem(shown, char)
        if problem is not None:
            problems.append(problem)
        if len(problems) >= _MAX_CHARS_REPORTED:
            break

    return problems


def unsafe_reason(name: str) -> str | None:
    """Why ``name`` can never be sent whatever the settings, or None if it can."""
    problems = _floor_problems(name)

    return problems[0] if problems else None


def url_safe(name: str) -> bool:
    """Whether ``name`` passes the floor: safe to put into a URL path as is."""
    return _floor_ok(name)


def _default_pattern_problems(name: str, shown: str) -> list[str]:
    """Specific advice for a URL-safe name that the default pattern refuses."""
    problems = []
    if any(char.isupper() for char in name):
        problems.append(
            f"the name {shown} has uppercase letters; names are lowercase, so "
            f"write {name.lower()!r} (provisioner never changes a name itself)"
        )
    others = sorted({c for c in name if not (c.isalnum() or c in "-_")})
    if others:
        listed = ", ".join(repr(c) for c in others)
        problems.append(
            f"the name {shown} contains {listed}; names hold only letters, "
            "digits, '-' and '_'"
        )
    if name[0] in "-_" or name[-1] in "-_":
        problems.append(f"the name {shown} must start and end with a letter or a digit")
    if len(name) > DEFAULT_MAX_LENGTH:
        problems.append(
            f"the name {shown} is {len(name)} characters long; the limit is "
            f"{DEFAULT_MAX_LENGTH}"
        )

    return problems


@dataclass(frozen=True)
class NamePolicy:
    """Which names the tool sends: the floor plus a configurable pattern.

    ``pattern`` must match the whole name (it is applied with ``fullmatch``);
    the floor applies whatever it allows.
    """

    pattern: str = DEFAULT_PATTERN
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # Whether every name the pattern matches passes the floor anyway, so that
    # accepting a name takes one match, not the floor's tests as well.
    _within_floor: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except re.error as exc:
            raise SettingsError(
                f"The name pattern {self.pattern!r} is not a valid regular "
                f"expression ({exc}); fix it in the settings."
            ) from exc
        # Frozen dataclass: the compiled form is derived state, set once here.
        object.__setattr__(self, "_regex", regex)
        # The default pattern allows only lowercase ASCII letters, digits, '-'
        # and '_', at least one of them: never a character the floor refuses.
        object.__setattr__(self, "_within_floor", self.pattern == DEFAULT_PATTERN)

    def problems(self, name: str) -> list[str]:
        """Every reason ``name`` is refused, as sentences; empty if accepted."""
        if self.accepts(name):
            return []
        floor = _floor_problems(name)
        if floor:
            return floor
        if self._regex.fullmatch(name):
            return []

        shown = repr(name)
        if self.pattern == DEFAULT_PATTERN:
            specific = _default_pattern_problems(name, shown)
            if specific:
                return _sentences(specific)
        return _sentences(
            [
                f"the name {shown} does not match the name pattern "
                f"{self.pattern!r} set in the settings"
            ]
        )

    def accepts(self, name: str) -> bool:
        """Whether ``name`` may be sent under this policy."""
        if self._within_floor:
            return self._regex.fullmatch(name) is not None

        return _floor_ok(name) and self._regex.fullmatch(name) is not None
