"""Who owns an identity enrolled through a public app, and what everyone else may do with it.

On a workstation every identity is everyone's. On a public app (a Space) an identity enrolled
through the app belongs to one owner: the visitor's session, or the logged-in Hugging Face
user. Its record, ``$LADTALK_HOME/owners/NAME.json``, lives beside the store (not inside the
identity folder, which an enrollment swaps in atomically), and is written before training
starts, so a name is claimed before any weights exist.

:class:`Access` answers, for one caller, which identities are visible (listed and usable)
and whether a name may be enrolled, continued or downloaded:

- shipped demo identities: visible to all, read-only for all;
- identities without a record (enrolled outside the app, by the operator): visible to all,
  read-only for app visitors;
- owned identities: visible to, continued by and downloaded by their owner only; another
  visitor enrolling that name is refused.

:class:`OwnerPolicy` bounds what strangers can store: identities per owner, total size, and an
expiry for session identities (a session ends, its identities with it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from ladtalk._util.atomic import write_json
from ladtalk._util.disk import dir_bytes
from ladtalk._util.paths import identities_dir, ladtalk_home
from ladtalk.errors import InputError
from ladtalk.identities.store import (
    SHIPPED_DIR,
    IdentityInfo,
    is_identity_dir,
    list_identities,
    store_path,
    validate_name,
)

SESSION, USER = "session", "user"
#: the owner of a record that cannot be read: nobody can prove it is theirs
UNREADABLE = "unreadable"


def owners_dir() -> Path:
    return ladtalk_home() / "owners"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Owner:
    """One caller of a public app: ``key`` is what the records store (session ids hashed)."""

    key: str
    kind: str  # SESSION or USER
    label: str  # what messages may show ("your session", "@alice")

    @classmethod
    def session(cls, session_hash: str) -> "Owner":
        if not session_hash:
            raise InputError("this request has no session; reload the page and try again")
        return cls(f"{SESSION}:{_digest(session_hash)}", SESSION, "this browser session")

    @classmethod
    def user(cls, username: str) -> "Owner":
        return cls(f"{USER}:{username}", USER, f"@{username}")

    @property
    def tag(self) -> str:
        """A short, stable, non-secret tag of the owner (for default identity names)."""
        return _digest(self.key)[:6]


@dataclass
class OwnerRecord:
    name: str
    owner: str
    kind: str
    created: float
    last_used: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "OwnerRecord":
        return cls(str(d["name"]), str(d["owner"]), str(d.get("kind", SESSION)),
                   float(d.get("created", 0.0)), float(d.get("last_used", 0.0)))


def _record_path(name: str) -> Path:
    return owners_dir() / f"{validate_name(name)}.json"


def read_owner(name: str) -> Optional[OwnerRecord]:
    """The owner record of ``name`` (None: not enrolled through a public app)."""
    path = _record_path(name)
    try:
        return OwnerRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # unreadable: treat as owned by nobody who can prove it (never as "shared")
        return OwnerRecord(name, UNREADABLE, SESSION, 0.0, 0.0)


def write_owner(name: str, owner: Owner, created: Optional[float] = None) -> OwnerRecord:
    now = time.time()
    rec = OwnerRecord(name, owner.key, owner.kind, created or now, now)
    write_json(_record_path(name), rec.to_json())
    return rec


def remove_identity(name: str) -> None:
    """Delete a store identity and its owner record (weights first, then the claim)."""
    shutil.rmtree(store_path(name), ignore_errors=True)
    _record_path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class OwnerPolicy:
    """What a public app lets strangers store."""

    max_per_owner: int = 3
    max_store_mb: float = 4096.0
    session_ttl_hours: float = 24.0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Access:
    """What one caller may do. ``public=False`` (a workstation): everything, as before."""

    public: bool
    owner: Optional[Owner] = None

    def owns(self, rec: Optional[OwnerRecord]) -> bool:
        return rec is not None and self.owner is not None and rec.owner == self.owner.key

    def can_see(self, info: IdentityInfo) -> bool:
        if not self.public or info.shipped:
            return True
        rec = read_owner(info.name)
        return rec is None or self.owns(rec)

    def identities(self) -> List[IdentityInfo]:
        """The identities this caller may list and use."""
        return [i for i in list_identities() if self.can_see(i)]

    def check_use(self, name: str) -> None:
        """Refuse (as unknown: a stranger's names are not disclosed) an identity not visible."""
        if not self.public:
            return
        rec = read_owner(name)
        if rec is not None and not self.owns(rec):
            raise InputError(f"unknown identity {name!r}; pick one from the list (identities "
                             "enrolled by other visitors are private to them)")

    def check_enroll(self, name: str) -> Optional[OwnerRecord]:
        """Refuse enrolling ``name`` unless it is new or this caller's own (continue)."""
        validate_name(name)
        if (SHIPPED_DIR / name).exists():
            raise InputError(f"'{name}' is the name of a shipped demo identity, which is "
                             "read-only; choose another name")
        if not self.public:
            return None
        if self.owner is None:
            raise InputError("enrolling on this public app needs a session: use the web page, "
                             "the Python client, or an MCP client that keeps a session")
        rec = read_owner(name)
        if rec is None and is_identity_dir(store_path(name)):
            raise InputError(f"'{name}' is an identity provided with this app and is "
                             "read-only; choose another name")
        if rec is not None and not self.owns(rec):
            raise InputError(f"the name '{name}' is taken by another visitor; choose "
                             "another name")
        return rec

    def check_download(self, name: str) -> None:
        """Weights go to their owner only (everyone on a workstation)."""
        if self.public and not self.owns(read_owner(name)):
            raise InputError(f"the weights of '{name}' can be downloaded only by whoever "
                             "enrolled it")


def owned_by(owner_key: str) -> List[OwnerRecord]:
    out = []
    base = owners_dir()
    for path in sorted(base.glob("*.json")) if base.is_dir() else []:
        rec = read_owner(path.stem)
        if rec is not None and rec.owner == owner_key:
            out.append(rec)
    return out


def claim(access: Access, name: str, policy: OwnerPolicy) -> Optional[OwnerRecord]:
    """Record ``name`` as the caller's before enrolling it (public mode; a no-op otherwise),
    within the policy's caps. Returns the record that was there before (None: a new claim)."""
    prev = access.check_enroll(name)
    if not access.public or access.owner is None:
        return prev
    expire_identities(policy)
    if prev is None:
        mine = [r for r in owned_by(access.owner.key) if r.name != name]
        if len(mine) >= policy.max_per_owner:
            raise InputError(f"{access.owner.label} already has {len(mine)} identities (the "
                             f"limit is {policy.max_per_owner}): continue one of "
                             f"{', '.join(r.name for r in mine)} under its name instead")
        used = store_bytes()
        if used >= policy.max_store_mb * 1e6:
            raise InputError(f"this app's identity storage is full ({used / 1e6:.0f} MB of "
                             f"{policy.max_store_mb:.0f} MB); try again later")
    write_owner(name, access.owner, created=prev.created if prev else None)
    return prev


def release(name: str, prev: Optional[OwnerRecord]) -> None:
    """Undo a new claim whose enrollment did not produce an identity."""
    if prev is None and not is_identity_dir(store_path(name)):
        _record_path(name).unlink(missing_ok=True)


def touch(name: str) -> None:
    """Mark an owned identity as used now (session identities expire after disuse)."""
    rec = read_owner(name)
    if rec is not None and rec.owner != UNREADABLE:
        rec.last_used = time.time()
        write_json(_record_path(name), rec.to_json())


def end_session(session_hash: str) -> List[str]:
    """Delete the identities of a session that ended (nobody can reach them any more)."""
    key = Owner.session(session_hash).key
    names = [r.name for r in owned_by(key)]
    for name in names:
        remove_identity(name)
    return names


def expire_identities(policy: OwnerPolicy, now: Optional[float] = None) -> List[str]:
    """Delete session identities unused for longer than the policy's TTL."""
    now = time.time() if now is None else now
    ttl = policy.session_ttl_hours * 3600.0
    base = owners_dir()
    gone = []
    for path in sorted(base.glob("*.json")) if base.is_dir() else []:
        rec = read_owner(path.stem)
        if (rec is not None and rec.owner != UNREADABLE and rec.kind == SESSION
                and now - rec.last_used > ttl):
            remove_identity(rec.name)
            gone.append(rec.name)
    return gone


def store_bytes() -> int:
    """Bytes the identity store holds (all identities)."""
    return dir_bytes(identities_dir())


__all__ = ["Access", "Owner", "OwnerPolicy", "OwnerRecord", "claim", "end_session",
           "expire_identities", "owned_by", "owners_dir", "read_owner", "release",
           "remove_identity", "store_bytes", "touch", "write_owner"]
