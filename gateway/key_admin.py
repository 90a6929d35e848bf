"""Keys added, rotated and revoked at runtime, without a redeploy (`gateway keys ...`).

The gateway makes every secret itself (256 random bits: gateway.state_store explains why it is
then stored as a SHA-256 digest), hands it out once, in the answer to the add or rotate call, and
keeps only its digest, in the store and in the KeyRing. A change counts from the next request;
the engines are not involved. Keys from the plan (its keys file, TANDEM_API_KEYS) are listed
beside the stored ones but changed only where they come from.

Two refusals keep the team from locking itself out: on a gateway with no keys yet (whose admin
routes answer on loopback only) the first key must be an admin key, since any key turns on
authentication for every route; and the last admin key, or the last key of all (which would open
the gateway to anyone), cannot be revoked.

A key may be limited to some of the served models (`models`, names or aliases), when it is added
or later (`PATCH /admin/keys/{name}`). A name the gateway does not serve is refused (400): a typo
would otherwise leave the key without the model it was meant for, and nothing would say why. A
stored key whose models a later config no longer serves is kept, with a warning at start.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import Collection, Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gateway.auth import ANONYMOUS, Client, KeyRing, KeySource, key_digest, model_limit
from gateway.contract.config import TrafficClass, unserved_models
from gateway.errors import GatewayError
from gateway.state_store import StateStore, StoredKey

log = logging.getLogger("tandem.gateway.keys")

SECRET_PREFIX = "tdm-"
_SHOWN_CHARACTERS = len(SECRET_PREFIX) + 4  # of 43 random ones: enough to tell keys apart


ModelNames = Annotated[
    list[str],
    Field(
        min_length=1,
        description="The models (names or aliases) the key may use; null: every model. Other models answer 404.",
    ),
]


def new_secret() -> str:
    """A new key: 32 random bytes from the OS's CSPRNG, URL-safe (secrets.token_urlsafe)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class NewKey(BaseModel):
    """What `POST /admin/keys` takes: a name and the key's limits (the gateway makes the secret)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64, description="Shown in usage, metrics and logs.")
    admin: bool = False
    default_class: TrafficClass | None = None
    models: ModelNames | None = None
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    expires_at: float | None = Field(None, description="Unix time after which the key is refused; none: never.")


class KeyChange(BaseModel):
    """What `PATCH /admin/keys/{name}` takes: a stored key's new model list (its secret, limits and
    counts stay). `models` must be given: null lifts the limit, so an empty body cannot do it by
    mistake."""

    model_config = ConfigDict(extra="forbid")

    models: ModelNames | None


class KeyInfo(BaseModel):
    """A key as `GET /admin/keys` lists it: never the secret, nor its digest."""

    name: str
    source: KeySource
    prefix: str | None = Field(None, description="The key's first characters (stored keys only).")
    admin: bool
    default_class: TrafficClass | None
    models: list[str] | None = Field(description="The models the key may use, sorted; null: every model.")
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    created_at: float | None = None
    expires_at: float | None = None
    rotated_at: float | None = None


class IssuedKey(KeyInfo):
    """The answer to add and rotate: the key itself, shown this once. A SecretStr, so that a stray
    repr or dump of this object shows the mask; the admin route reveals it in its answer only."""

    key: SecretStr


class KeyAdmin:
    """Adds, changes, rotates and revokes the ring's stored keys. `served_names`: every name and
    alias of the models the gateway serves (GatewayConfig.served_names), which a key's models must
    be among."""

    def __init__(self, keyring: KeyRing, served_names: Collection[str]) -> None:
        self.keyring = keyring
        self.served_names = frozenset(served_names)
        self._store: StateStore | None = None
        self._stored: dict[str, StoredKey] = {}

    def load(self, store: StateStore) -> None:
        """Put the stored keys in the ring (at start). A stored key whose name the plan now also
        uses is left out, with a warning: the plan's key wins."""
        self._store = store
        for stored in store.keys():
            if any(client.name == stored.name for client in self.keyring.clients):
                log.warning("stored key %r is left out: the plan has a key of that name", stored.name)
                continue
            self._stored[stored.name] = stored
            self.keyring.add(stored.digest, _client_of(stored))
            gone = unserved_models(stored.models, self.served_names)
            if gone:
                log.warning("stored key %r names models this gateway does not serve: %s", stored.name, gone)

    def _require_store(self) -> StateStore:
        if self._store is None:
            raise GatewayError(503, "the key store is not open yet; try again once the gateway has started")
        return self._store

    def list(self) -> list[KeyInfo]:
        return [self._info(client) for client in self.keyring.clients]

    def _info(self, client: Client) -> KeyInfo:
        stored = self._stored.get(client.name) if client.source == "store" else None
        return KeyInfo(
            name=client.name,
            source=client.source,
            prefix=stored.prefix if stored else None,
            admin=client.admin,
            default_class=client.default_class,
            models=sorted(client.models) if client.models is not None else None,
            requests_per_minute=client.requests_per_minute,
            tokens_per_minute=client.tokens_per_minute,
            max_concurrent=client.max_concurrent,
            created_at=stored.created_at if stored else None,
            expires_at=client.expires_at,
            rotated_at=stored.rotated_at if stored else None,
        )

    def add(self, new: NewKey) -> IssuedKey:
        store = self._require_store()
        if new.name == ANONYMOUS:
            raise GatewayError(400, f"{ANONYMOUS!r} names the callers of a gateway without keys; pick another name")
        self._refuse_taken(new.name)
        if not self.keyring.enabled and not new.admin:
            raise GatewayError(
                409,
                "this gateway has no keys yet, and its first key turns on authentication for every route, the "
                f"admin routes included: add an admin key first (`gateway keys add NAME --admin`), then {new.name!r}",
            )
        now = time.time()
        if new.expires_at is not None and new.expires_at <= now:
            raise GatewayError(400, "expires_at is in the past", param="expires_at")
        models = self._served(new.models)
        secret = new_secret()
        stored = StoredKey(
            name=new.name,
            digest=key_digest(secret),
            prefix=secret[:_SHOWN_CHARACTERS],
            admin=new.admin,
            default_class=new.default_class,
            models=models,
            requests_per_minute=new.requests_per_minute,
            tokens_per_minute=new.tokens_per_minute,
            max_concurrent=new.max_concurrent,
            created_at=now,
            expires_at=new.expires_at,
        )
        try:
            store.add_key(stored)
        except sqlite3.IntegrityError:  # another process added it: one gateway per data directory
            raise GatewayError(409, f"a key named {new.name!r} is already stored") from None
        self._stored[new.name] = stored
        client = _client_of(stored)
        self.keyring.add(stored.digest, client)
        log.info("key %r added (admin: %s)", new.name, new.admin)
        return IssuedKey(**self._info(client).model_dump(), key=SecretStr(secret))

    def change(self, name: str, change: KeyChange) -> KeyInfo:
        """Give a stored key a new model list; it counts from the next request."""
        store = self._require_store()
        client = self._stored_client(name)
        models = self._served(change.models)
        if not store.set_models(name, models):
            raise GatewayError(404, f"no stored key named {name!r}")
        self._stored[name] = dataclasses.replace(self._stored[name], models=models)
        client.models = model_limit(models)
        log.info("key %r may use %s", name, "every model" if models is None else ", ".join(models))
        return self._info(client)

    def _served(self, models: Sequence[str] | None) -> tuple[str, ...] | None:
        """A key's model list, each name once, in the order given; 400 naming a model the gateway
        does not serve."""
        if models is None:
            return None
        unknown = unserved_models(models, self.served_names)
        if unknown:
            raise GatewayError(
                400,
                f"this gateway serves no model named {unknown[0]!r}: a key's models are among "
                f"{sorted(self.served_names)} (names or aliases)",
                param="models",
            )
        return tuple(dict.fromkeys(models))

    def rotate(self, name: str) -> IssuedKey:
        """A new secret for a stored key; the old one stops working now. Limits stay."""
        store = self._require_store()
        client = self._stored_client(name)
        secret = new_secret()
        digest, prefix, now = key_digest(secret), secret[:_SHOWN_CHARACTERS], time.time()
        if not store.replace_secret(name, digest, prefix, now):
            raise GatewayError(404, f"no stored key named {name!r}")
        stored = self._stored[name]
        self._stored[name] = dataclasses.replace(stored, digest=digest, prefix=prefix, rotated_at=now)
        self.keyring.replace_digest(name, digest)
        log.info("key %r rotated", name)
        return IssuedKey(**self._info(client).model_dump(), key=SecretStr(secret))

    def revoke(self, name: str) -> KeyInfo:
        store = self._require_store()
        client = self._stored_client(name)
        others = [c for c in self.keyring.clients if c.name != name]
        if not others:
            raise GatewayError(
                409, f"{name!r} is the gateway's last key: without keys it would serve anyone; add another first"
            )
        if client.admin and not any(c.admin for c in others):
            raise GatewayError(
                409,
                f"{name!r} is the last admin key: without one nobody could manage keys; add another admin key first",
            )
        info = self._info(client)
        store.delete_key(name)
        self.keyring.remove(name)
        del self._stored[name]
        log.info("key %r revoked", name)
        return info

    def _refuse_taken(self, name: str) -> None:
        existing = next((c for c in self.keyring.clients if c.name == name), None)
        if existing is None:
            return
        if existing.source == "plan":
            raise GatewayError(409, f"key {name!r} comes from the plan (or TANDEM_API_KEYS); pick another name")
        raise GatewayError(409, f"a key named {name!r} exists; rotate it (`gateway keys rotate {name}`) or revoke it")

    def _stored_client(self, name: str) -> Client:
        client = next((c for c in self.keyring.clients if c.name == name), None)
        if client is None:
            raise GatewayError(404, f"no key named {name!r}")
        if client.source == "plan":
            raise GatewayError(
                409, f"key {name!r} comes from the plan (or TANDEM_API_KEYS): change it there and redeploy"
            )
        return client


def _client_of(stored: StoredKey) -> Client:
    return Client(
        name=stored.name,
        default_class=stored.default_class,  # type: ignore[arg-type]  # written from a TrafficClass
        models=model_limit(stored.models),
        admin=stored.admin,
        requests_per_minute=stored.requests_per_minute,
        tokens_per_minute=stored.tokens_per_minute,
        max_concurrent=stored.max_concurrent,
        expires_at=stored.expires_at,
        source="store",
    )
