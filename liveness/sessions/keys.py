"""Signing keys: the :class:`Keyring` (rotation by key id), key strength and file checks."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import KeyConfigError, KeyMissingError

ENV_KEY = "LIVENESS_SECRET_KEY"
ENV_KEY_ID = "LIVENESS_SECRET_KEY_ID"
DEFAULT_KEY_ID = "default"
# 128 bits: below this an offline guess of the key from one token and its signature becomes
# thinkable; HMAC-SHA256 itself is happy with any length.
MIN_KEY_BYTES = 16
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

_MISSING_KEY_HELP = (
    f"No signing key for challenge tokens. Set the environment variable {ENV_KEY} to a random "
    f"secret of at least {MIN_KEY_BYTES} bytes (for example the output of "
    '`python -c "import secrets; print(secrets.token_urlsafe(32))"`), optionally with '
    f"{ENV_KEY_ID} naming it, or pass --key-file PATH."
)


@dataclass(frozen=True, repr=False)
class Keyring:
    """Signing keys by key id (``kid``); ``current`` names the one that signs new tokens.

    Verification picks the key by the token's ``kid``, so rotation is: add the new key and make
    it current, keep the old one until the tokens it signed have expired (minutes), then remove
    it. Every key must be at least :data:`MIN_KEY_BYTES` long.

    A key file is either one secret (the whole file, surrounding whitespace stripped) or JSON::

        {"current": "2025-02", "keys": {"2025-02": "new secret", "2025-01": "old secret"}}
    """

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        keys = dict(self.keys)
        if not keys:
            raise KeyMissingError(_MISSING_KEY_HELP)
        for kid, secret in keys.items():
            if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
                raise KeyConfigError(
                    f"Key id {kid!r} is not usable: use 1 to 64 letters, digits, '.', '_' or '-'."
                )
            if not isinstance(secret, bytes):
                raise KeyConfigError(f"Key {kid!r} must be bytes, not {type(secret).__name__}.")
            if len(secret) < MIN_KEY_BYTES:
                raise KeyConfigError(
                    f"Key {kid!r} is {len(secret)} bytes long; use at least {MIN_KEY_BYTES} "
                    "random bytes."
                )
        if self.current not in keys:
            raise KeyConfigError(f"The current key id {self.current!r} is not in the keyring.")
        # A private copy, so that later changes to the caller's dict cannot swap keys.
        object.__setattr__(self, "keys", keys)

    def __repr__(self) -> str:  # never print secrets
        return f"Keyring(current={self.current!r}, kids={sorted(self.keys)!r})"

    @classmethod
    def single(cls, secret: bytes | str, kid: str = DEFAULT_KEY_ID) -> Keyring:
        """A keyring with one key (a ``str`` secret is UTF-8 encoded)."""
        return cls({kid: _secret_bytes(secret)}, kid)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """One key from ``LIVENESS_SECRET_KEY`` (UTF-8), id from ``LIVENESS_SECRET_KEY_ID``
        (default ``"default"``). Raises :class:`KeyMissingError` when the variable is unset."""
        env = os.environ if environ is None else environ
        secret = env.get(ENV_KEY, "")
        if not secret:
            raise KeyMissingError(_MISSING_KEY_HELP)
        check_key_strength(_secret_bytes(secret), f"The key in {ENV_KEY}")
        return cls.single(secret, env.get(ENV_KEY_ID) or DEFAULT_KEY_ID)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], kid: str = DEFAULT_KEY_ID) -> Keyring:
        """Keys from a file: a single secret (with id ``kid``) or the JSON form above.

        The file must not be readable by group or others, and every key in it must pass
        :func:`check_key_strength`; :class:`KeyConfigError` otherwise."""
        try:
            check_key_file_permissions(path)
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyMissingError(
                f"Key file {os.fspath(path)!r} not found. {_MISSING_KEY_HELP}"
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise KeyConfigError(f"Key file {os.fspath(path)!r} cannot be read: {e}") from e
        stripped = text.strip()
        if stripped.startswith("{"):
            try:
                doc = json.loads(stripped)
                keys = {str(k): _secret_bytes(v) for k, v in doc["keys"].items()}
                current = doc["current"]
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise KeyConfigError(
                    f"Key file {os.fspath(path)!r} is not valid JSON of the form "
                    '{"current": ID, "keys": {ID: SECRET, ...}}.'
                ) from e
            for k, secret in keys.items():
                check_key_strength(secret, f"Key {k!r} in {os.fspath(path)!r}")
            return cls(keys, current)
        if not stripped:
            raise KeyMissingError(f"Key file {os.fspath(path)!r} is empty. {_MISSING_KEY_HELP}")
        check_key_strength(_secret_bytes(stripped), f"The key in {os.fspath(path)!r}")
        return cls.single(stripped, kid)

    @classmethod
    def load(
        cls,
        key_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Keyring:
        """What a command line does: ``key_file`` if given, else the environment."""
        if key_file is not None:
            return cls.from_file(key_file)
        return cls.from_env(environ)

    def with_key(self, kid: str, secret: bytes | str, *, make_current: bool = True) -> Keyring:
        """A new keyring with ``kid`` added (or replaced), by default as the current key."""
        keys = dict(self.keys)
        keys[kid] = _secret_bytes(secret)
        return Keyring(keys, kid if make_current else self.current)

    def without_key(self, kid: str) -> Keyring:
        """A new keyring without ``kid``; tokens it signed stop verifying. The current key
        cannot be removed (make another one current first)."""
        if kid == self.current:
            raise KeyConfigError(f"Key {kid!r} is current; make another key current first.")
        return Keyring({k: v for k, v in self.keys.items() if k != kid}, self.current)

    def sign(self, payload: bytes, kid: str | None = None) -> bytes:
        """HMAC-SHA256 of ``payload`` under key ``kid`` (default: the current key)."""
        return hmac.new(self.keys[kid or self.current], payload, hashlib.sha256).digest()

    def verify(self, kid: str, payload: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the HMAC of ``payload`` under ``kid``; unknown ``kid`` is
        False. The comparison takes the same time wherever the bytes differ."""
        key = self.keys.get(kid)
        if key is None:
            return False
        expected = hmac.new(key, payload, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)


def _secret_bytes(secret: bytes | str) -> bytes:
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, bytes):
        return secret
    raise KeyConfigError(f"A key must be str or bytes, not {type(secret).__name__}.")


# Below this many bits of empirical (per-byte Shannon) entropy over the whole key, the key
# is refused. Random keys score above it: of 20,000 each, the lowest scores were 36.0 for
# token_hex(8) (16 hex characters, 64 bits), 47.6 for token_urlsafe(12), 55.2 for
# token_bytes(16) and 187.5 for token_urlsafe(32), none refused; the weak keys of issue 12
# score 0 ("aaaaaaaaaaaaaaaa") and 47 ("changeme-changeme", refused for its placeholder
# words instead).
MIN_KEY_ENTROPY_BITS = 32.0
# Words people type as placeholders; a key that is mostly these is a placeholder.
_PLACEHOLDER_WORDS = (
    "changeme", "change-me", "change_me", "password", "passwd", "secret", "letmein",
    "qwerty", "123456", "example", "default", "admin", "test", "key",
)  # fmt: skip


def key_entropy_bits(secret: bytes) -> float:
    """Empirical Shannon entropy of ``secret``'s bytes times its length, in bits: an upper
    bound on what a guesser faces if the key's bytes were drawn independently."""
    n = len(secret)
    if n == 0:
        return 0.0
    counts: dict[int, int] = {}
    for b in secret:
        counts[b] = counts.get(b, 0) + 1
    return -n * sum(c / n * math.log2(c / n) for c in counts.values())


def check_key_strength(secret: bytes, what: str = "The key") -> None:
    """:class:`KeyConfigError` if ``secret`` is short or guessable.

    Refused: under :data:`MIN_KEY_BYTES` bytes; under :data:`MIN_KEY_ENTROPY_BITS` of
    empirical entropy (:func:`key_entropy_bits`); one piece repeated (``"abcabcabc..."``,
    ``"changeme-changeme"``); a run with a constant step (``"abcdefghijklmnop"``); or made
    mostly of placeholder words (``"secretsecretkey!"``). Random keys from
    ``secrets.token_urlsafe(32)`` or ``token_bytes(32)`` always pass.
    """
    n = len(secret)
    if n < MIN_KEY_BYTES:
        raise KeyConfigError(
            f"{what} is {n} bytes long; use at least {MIN_KEY_BYTES} random bytes "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )
    weak = None
    if key_entropy_bits(secret) < MIN_KEY_ENTROPY_BITS:
        weak = "has too little variety"
    elif any(secret == (secret[:p] * (n // p + 1))[:n] for p in range(1, n // 2 + 1)):
        weak = "is one piece repeated"
    elif len({(secret[i + 1] - secret[i]) % 256 for i in range(n - 1)}) == 1:
        weak = "is a simple sequence"
    else:
        rest = secret.lower()
        for word in _PLACEHOLDER_WORDS:
            rest = rest.replace(word.encode(), b"")
        if len(rest) < MIN_KEY_BYTES // 2:
            weak = "is made of placeholder words"
    if weak:
        raise KeyConfigError(
            f"{what} {weak}, so it can be guessed; use a random secret "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )


def check_key_file_permissions(path: str | os.PathLike[str]) -> None:
    """:class:`KeyConfigError` if the key file can be read or written by group or others
    (POSIX only): a key others can read signs tokens for them too."""
    if os.name != "posix":
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise KeyConfigError(
            f"Key file {os.fspath(path)!r} has permissions {mode:o}: others can read it. "
            f"Run: chmod 600 {os.fspath(path)}"
        )
