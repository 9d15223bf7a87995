"""The one exception type that the CLI turns into a one-line message and a nonzero exit, and
what the CLI says when a command is interrupted."""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Iterable, Iterator

INTERRUPTED_ATTR = "mtlbench_interrupted"  # set on a KeyboardInterrupt: what it interrupted


class UserError(Exception):
    """A problem the user can fix (bad option, missing file); shown as one line, no traceback."""


@contextmanager
def interrupted_means(message: str) -> Iterator[None]:
    """While inside, Ctrl-C (or SIGTERM, raised as a KeyboardInterrupt) is reported by the CLI as
    `mtlbench: interrupted; <message>`. Nested, the innermost message wins: it knows best."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if not hasattr(exc, INTERRUPTED_ATTR):
            setattr(exc, INTERRUPTED_ATTR, message)
        raise


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """The one line the CLI prints for `exc`: what was interrupted, and what to do."""
    what = getattr(exc, INTERRUPTED_ATTR, "")
    return f"mtlbench: interrupted; {what}" if what else "mtlbench: interrupted"


def one_line(err: BaseException) -> str:
    """An exception's message on one line (parsers' messages may span several)."""
    return " ".join(str(err).split())


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest of `choices` to a mistyped `word`, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""
