"""API keys: where they come from, and a holder that never shows its value.

The key comes from the `--api-key` flag (its value, or `@path` to read a file), else
`JUDGE_API_KEY`, `OPENAI_API_KEY`, or the file named by `JUDGE_API_KEY_FILE`. It is only
revealed to build the Authorization header; reprs, logs and errors show `***`.
"""

from __future__ import annotations

import os
from pathlib import Path

from judge.errors import InputError


class Secret:
    """A string that is masked everywhere except `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Keep keys out of pickles (and so out of caches and stores).
        raise TypeError("an API key cannot be pickled")


def _read_key_file(path: str, origin: str) -> Secret:
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(
            f"cannot read the API key file {file} ({origin}): {exc.strerror}"
        ) from None
    if not text:
        raise InputError(f"the API key file {file} ({origin}) is empty")
    return Secret(text)


def resolve_api_key(value: str | Secret | None = None) -> Secret | None:
    """The API key to send, or None.

    Args:
        value: the flag's value: the key itself, or "@path" to read it from a file.

    Raises:
        InputError: a key file named by the flag or `JUDGE_API_KEY_FILE` cannot be read.
    """
    if isinstance(value, Secret):
        return value
    if value:
        if value.startswith("@"):
            return _read_key_file(value[1:], "--api-key")
        return Secret(value)
    for var in ("JUDGE_API_KEY", "OPENAI_API_KEY"):
        if os.environ.get(var):
            return Secret(os.environ[var])
    if os.environ.get("JUDGE_API_KEY_FILE"):
        return _read_key_file(os.environ["JUDGE_API_KEY_FILE"], "JUDGE_API_KEY_FILE")
    return None
