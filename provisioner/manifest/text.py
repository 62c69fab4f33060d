"""Turning a manifest's bytes into text, refusing anything but UTF-8 with a line."""

from __future__ import annotations

from provisioner.manifest.model import Refused, ScanContext

UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def check_start(ctx: ScanContext, head: bytes) -> None:
    """Refuse a file that announces UTF-16 or UTF-32 with its first bytes."""
    if head.startswith(_UTF16_BOMS) or head.startswith(b"\x00\x00\xfe\xff"):
        raise Refused(
            ctx.problem(
                1,
                None,
                "The file is saved as UTF-16 or UTF-32 (it starts with that byte "
                "order mark); save it as UTF-8 and try again.",
                "encoding",
            )
        )


def refuse_nul(ctx: ScanContext, line: int) -> Refused:
    """The refusal for a NUL byte, which UTF-8 text never holds."""
    return Refused(
        ctx.problem(
            line,
            None,
            f"Line {line} holds a NUL byte, so this is not UTF-8 text (UTF-16 "
            "without a byte order mark, or a binary file?); save it as UTF-8.",
            "encoding",
        )
    )


def refuse_undecodable(
    ctx: ScanContext, line: int, raw_line: bytes, error: UnicodeDecodeError
) -> Refused:
    """The refusal for bytes that are not UTF-8, naming the line and column."""
    bad = raw_line[error.start : error.end]
    column = len(raw_line[: error.start].decode("utf-8", errors="replace")) + 1
    shown = " ".join(f"0x{byte:02X}" for byte in bad)
    message = (
        f"Line {line} is not UTF-8: the byte {shown} at column {column} cannot be "
        "read. The file seems to use another encoding (Latin-1 or Windows-1252, "
        'as older Excel writes); save it as UTF-8 ("CSV UTF-8" in Excel) and '
        "try again."
    )

    return Refused(ctx.problem(line, None, message, "encoding"))


def decode_whole(ctx: ScanContext, data: bytes) -> str:
    """Decode a whole file held in memory; refusals name the line at fault."""
    check_start(ctx, data[:4])
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]

    nul = data.find(b"\x00")
    if nul >= 0:
        raise refuse_nul(ctx, data.count(b"\n", 0, nul) + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        raw_line = data[line_start : line_end if line_end >= 0 else len(data)]
        shifted = UnicodeDecodeError(
            exc.encoding,
            raw_line,
            exc.start - line_start,
            exc.end - line_start,
            exc.reason,
        )
        raise refuse_undecodable(
            ctx, data.count(b"\n", 0, exc.start) + 1, raw_line, shifted
        ) from None
