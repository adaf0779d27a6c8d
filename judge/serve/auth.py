"""Bearer tokens: where they come from, and how a request's token is checked.

Tokens come from `--tokens-file FILE` (one per line) or `JUDGE_SERVE_TOKENS` (separated by
commas). Each is `TOKEN`, `NAME:TOKEN` or `NAME:TOKEN:ROLE`; the name (letters, digits,
`._-`) goes into the audit log instead of the token, and an unnamed token is logged as
`token-<8 hex of its sha256>`, which tells tokens apart without revealing one. Blank lines
and lines starting with `#` are skipped.

The role is `user` (the default: judge images, read the policy and the metrics) or
`admin` (also reload the policy). A third field that is not a role is refused rather than
read as part of the token, so a typo never leaves an operator with a user token that they
think is an admin one.

A presented token is compared with every known token in constant time (`hmac.compare_digest`
over sha256 digests, so lengths never differ), and the loop never stops early: how long a
check takes says nothing about how close a guess was. Tokens are never logged, and the
object's repr shows names only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from judge.errors import InputError

ENV_VAR = "JUDGE_SERVE_TOKENS"
ROLES = ("user", "admin")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Tokens:
    """The accepted tokens, kept as (name, sha256 digest) pairs only, and each name's role."""

    entries: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    roles: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.entries]

    def __repr__(self) -> str:
        return f"Tokens(names={self.names!r})"

    def role(self, name: str | None) -> str:
        """The role of the token named `name` ("user" unless the file says "admin")."""
        return self.roles.get(name or "", "user")

    def check(self, presented: str | None) -> str | None:
        """The name of the token presented, or None if it is not one of ours."""
        if presented is None:
            return None
        wanted = _digest(presented)
        found: str | None = None
        for name, digest in self.entries:
            # No early exit: every entry is compared, whatever matched.
            if hmac.compare_digest(wanted, digest) and found is None:
                found = name
        return found

    @classmethod
    def parse(cls, items: Iterable[str], where: str) -> Tokens:
        """Tokens from `TOKEN` / `NAME:TOKEN` / `NAME:TOKEN:ROLE` items; `where` names the
        source in errors."""
        entries: list[tuple[str, bytes]] = []
        roles: dict[str, str] = {}
        names: set[str] = set()
        for number, raw in enumerate(items, 1):
            item = raw.strip()
            if not item or item.startswith("#"):
                continue
            name, sep, token = item.partition(":")
            role = "user"
            if not sep or not _NAME.match(name):
                name, token = "", item
            elif ":" in token:
                token, _, role = token.rpartition(":")
                role = role.strip().lower()
                if role not in ROLES:
                    raise InputError(
                        f"{where}: token {number} has the role {role!r}; a role is one of "
                        f"{', '.join(ROLES)} (NAME:TOKEN:ROLE; tokens hold no ':')"
                    )
            token = token.strip()
            if len(token) < 8:
                raise InputError(
                    f"{where}: token {number} is shorter than 8 characters; use a long "
                    "random one, e.g. from `python -c 'import secrets; "
                    "print(secrets.token_urlsafe())'`"
                )
            name = name or f"token-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
            if name in names:
                raise InputError(f"{where}: the token name {name!r} is used twice")
            names.add(name)
            entries.append((name, _digest(token)))
            roles[name] = role
        if not entries:
            raise InputError(f"{where}: no token found")
        return cls(tuple(entries), roles)


def load_tokens(path: Path | None = None, env: str | None = None) -> Tokens:
    """Tokens from a file, else from `JUDGE_SERVE_TOKENS`, else none (no authentication).

    Raises:
        InputError: the file cannot be read, or a token is malformed.
    """
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read the tokens file {path}: {error}") from None
        return Tokens.parse(text.splitlines(), str(path))
    value = os.environ.get(ENV_VAR) if env is None else env
    if value:
        return Tokens.parse(value.split(","), ENV_VAR)
    return Tokens()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
