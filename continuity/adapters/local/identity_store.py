"""Local users of the devhost: ``{local dir}/users.json`` (mode 600) holding salted key hashes.

The key itself is shown once when the user is created. For the CLI's ``--user NAME`` it is also kept
in the local client keyring ``{local dir}/credentials/NAME.key`` (mode 600, the way ``~/.pgpass``
keeps a password for the client): the verifier side (``users.json``) never holds a key. In Azure,
platform authentication replaces all of this (``CONTINUITY_PLATFORM_AUTH``).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from continuity.adapters.local.private_files import write_private
from continuity.kernel import settings
from continuity.kernel.errors import ConfigError, Conflict, InvalidRequest
from continuity.kernel.identity import (
    KEY_PREFIX,
    KEY_SOURCE,
    LocalUser,
    Principal,
    Role,
    linked_ids,
    make_local_user,
    validate_user_name,
)


def _local_dir() -> Path:
    return settings.LocalStackSettings.from_env().base_dir


def _true(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def platform_auth_enabled() -> bool:
    """Whether X-MS-CLIENT-PRINCIPAL may be trusted (the platform authenticates before our code runs)."""
    return _true(settings.get("CONTINUITY_PLATFORM_AUTH"))


def keys_allowed_with_platform_auth() -> bool:
    """Whether local API keys still work while platform authentication is on (off unless a setting says so)."""
    return _true(settings.get("CONTINUITY_LOCAL_USERS_WITH_PLATFORM_AUTH"))


def _write_private(path: Path, text: str) -> None:
    write_private(path, text)


class IdentityStore:
    """Reads and writes local users; keys are generated here and returned once."""

    def __init__(self, base_dir: Path | None = None) -> None:
        self.base = base_dir or _local_dir()

    @property
    def users_file(self) -> Path:
        return self.base / "users.json"

    def key_file(self, name: str) -> Path:
        return self.base / "credentials" / f"{validate_user_name(name)}.key"

    def list_users(self) -> list[LocalUser]:
        """Every local user; empty when none was added yet."""
        if not self.users_file.exists():
            return []
        try:
            raw = json.loads(self.users_file.read_text())
            return [LocalUser.from_json(u) for u in raw.get("users", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.users_file}: not a valid users file ({exc}); re-create it with "
                              "`continuity users add`") from exc

    def get_user(self, name: str) -> LocalUser:
        for user in self.list_users():
            if user.name == name:
                return user
        raise InvalidRequest(f"no local user {name!r}; add one with `continuity users add {name} --role ...`")

    def add_user(self, name: str, roles: list[Role], *, replace: bool = False, save_key: bool = True,
                 tenants: list[str] | None = None, links: list[str] | None = None) -> str:
        """Create (or with ``replace``, re-key) a user; returns the new key, which is not stored anywhere
        but the owner-only client keyring (and not even there with ``save_key=False``).

        ``links`` are the principal ids of the same person's other identities (``aad:{tid}/{oid}``): whichever
        identity requests a failover, none of them may approve it.

        :raises Conflict: the user exists and ``replace`` is False.
        """
        validate_user_name(name)
        users = [u for u in self.list_users()]
        if any(u.name == name for u in users) and not replace:
            raise Conflict(f"local user {name} already exists; use --replace to issue a new key")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        user = make_local_user(name, roles, key, secrets.token_hex(16), datetime.now(UTC).isoformat(), tenants,
                               links or ())
        users = [u for u in users if u.name != name] + [user]
        self.base.mkdir(parents=True, exist_ok=True)
        _write_private(self.users_file, json.dumps({"users": [u.to_json() for u in users]}, indent=2) + "\n")
        if save_key:
            self.key_file(name).parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.key_file(name).parent, 0o700)
            _write_private(self.key_file(name), key + "\n")
        return key

    def remove_user(self, name: str) -> bool:
        """Remove a user and its keyring entry; succeeds (returning False) if it did not exist."""
        users = self.list_users()
        kept = [u for u in users if u.name != name]
        self.key_file(name).unlink(missing_ok=True)
        if len(kept) == len(users):
            return False
        _write_private(self.users_file, json.dumps({"users": [u.to_json() for u in kept]}, indent=2) + "\n")
        return True

    def client_key(self, name: str) -> str:
        """The key the CLI sends for ``--user NAME``.

        :raises InvalidRequest: this machine's keyring holds no key for the user.
        """
        path = self.key_file(name)
        if not path.exists():
            raise InvalidRequest(f"no key for local user {name} in {path.parent}; create the user with "
                                 f"`continuity users add {name} --role ...`")
        return path.read_text().strip()

    def principal_for(self, name: str) -> Principal:
        user = self.get_user(name)
        return Principal(name=user.name, roles=user.roles, source=KEY_SOURCE, tenants=user.tenants,
                         id=user.principal_id, linked=linked_ids(user.principal_id, self.list_users()))
