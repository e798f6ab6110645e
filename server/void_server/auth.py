"""Who is asking: bearer tokens mapped to user names, compared in constant time.

Tokens come from `--token` (user DEFAULT_USER) and a tokens file of lines `USER TOKEN` ('#' starts a comment).
A token is never logged or echoed in an error; only the user name it maps to is used beyond this module.
"""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Dict, Optional

from .config import ConfigError, ServerConfig

DEFAULT_USER = "default"  # the owner of jobs made with the single --token


def read_tokens_file(path: Path) -> Dict[str, str]:
    """token -> user from lines `USER TOKEN`; a malformed line names its line number, never its content."""
    tokens: Dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError("tokens file %s, line %d: expected 'USER TOKEN'" % (path, number))
        user, token = parts
        if token in tokens:
            raise ConfigError("tokens file %s, line %d: this token is already given to another user" % (path, number))
        tokens[token] = user
    if not tokens:
        raise ConfigError("tokens file %s holds no 'USER TOKEN' lines" % path)
    return tokens


class TokenTable:
    def __init__(self, tokens: Dict[str, str]) -> None:
        self._tokens = [(t.encode("utf-8"), u) for t, u in tokens.items()]

    @classmethod
    def from_config(cls, config: ServerConfig) -> "TokenTable":
        tokens = read_tokens_file(config.tokens_file) if config.tokens_file else {}
        if config.token:
            tokens.setdefault(config.token, DEFAULT_USER)
        return cls(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def user_for(self, authorization: Optional[str]) -> Optional[str]:
        """The user of an `Authorization: Bearer TOKEN` header, or None. Every token is compared (no early exit)
        so the time taken does not tell how close a guess was or which user it nearly matched."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        candidate = given.strip().encode("utf-8")
        found = None
        for token, user in self._tokens:
            if hmac.compare_digest(candidate, token) and found is None:
                found = user
        return found
