"""API keys, per-key rate limits and concurrency caps.

Keys are optional: with none configured every request is the anonymous client, as with
`vllm serve` without --api-key. The anonymous client is never an admin: with no keys, the admin
routes answer only callers on loopback (`KeyRing.authorize_admin`), so a gateway listening on
0.0.0.0 does not hand its routing to the network.

Keys come from the plan (or its keys file and TANDEM_API_KEYS), read at start, and from the
gateway's own store, where `gateway keys add|rotate|revoke` puts them at runtime
(gateway.key_admin). The ring holds only each key's SHA-256 digest (gateway.state_store says why
that hash): a presented key is hashed once and compared in constant time against every digest
(no early exit on the first match, no lookup by the secret). Keys are never logged: metrics and
logs name the key by its `name`. State is one small record per key, so memory is bounded by the
keys, not by traffic.

A key may be limited to some of the gateway's models (`models`: names or aliases;
`Client.may_use`); the anonymous client, like a key without a list, may use every model.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from gateway.contract.config import ApiKey, AuthSettings, GatewaySettings, TrafficClass
from gateway.errors import GatewayError

KeySource = Literal["plan", "store"]


def key_digest(secret: str) -> bytes:
    """The SHA-256 digest a key is known by (never the key itself)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass
class Client:
    """A caller as the gateway knows it: the key's name and what the key allows."""

    name: str
    default_class: TrafficClass | None = None
    models: frozenset[str] | None = None  # names or aliases this key may use; None: every model
    admin: bool = False
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    expires_at: float | None = None  # unix time; None: never
    source: KeySource = "plan"
    in_flight: int = 0
    _tokens: float = 0.0
    _refilled_at: float = field(default_factory=time.monotonic)
    _token_budget: float = 0.0
    _budget_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._tokens = float(self.requests_per_minute or 0)
        self._token_budget = float(self.tokens_per_minute or 0)

    def may_use(self, served_names: Iterable[str]) -> bool:
        """Whether this key may use the model known by `served_names` (its name and aliases): a
        key limited to a model by any of its names may use it by every name, so that a client
        that switches from the name to an alias is not refused."""
        return self.models is None or not self.models.isdisjoint(served_names)

    def _check_token_budget(self, now: float) -> None:
        """Tokens per minute: a bucket of tokens_per_minute, refilled continuously. A request's
        tokens are known only once it ends, so they are taken then (`charge_tokens`) and a request
        is admitted while the bucket is above zero: a large answer can overdraw it, and the key
        then waits until the refill has covered the overdraft."""
        if self.tokens_per_minute is None:
            return
        per_second = self.tokens_per_minute / 60.0
        self._token_budget = min(self.tokens_per_minute, self._token_budget + (now - self._budget_at) * per_second)
        self._budget_at = now
        if self._token_budget <= 0:
            wait = max(1, math.ceil(-self._token_budget / per_second))
            raise GatewayError(
                429,
                f"token limit of {self.tokens_per_minute} tokens per minute reached for key {self.name!r}",
                headers={"Retry-After": str(wait)},
            )

    def charge_tokens(self, tokens: int) -> None:
        """Take a finished request's prompt and completion tokens from the per-minute budget."""
        if self.tokens_per_minute is not None and tokens > 0:
            now = time.monotonic()
            per_second = self.tokens_per_minute / 60.0
            self._token_budget = min(self.tokens_per_minute, self._token_budget + (now - self._budget_at) * per_second)
            self._budget_at = now
            self._token_budget -= tokens

    def _take_rate_token(self, now: float) -> None:
        """Token bucket: requests_per_minute tokens, refilled continuously."""
        if self.requests_per_minute is None:
            return
        per_second = self.requests_per_minute / 60.0
        self._tokens = min(self.requests_per_minute, self._tokens + (now - self._refilled_at) * per_second)
        self._refilled_at = now
        if self._tokens < 1.0:
            wait = math.ceil((1.0 - self._tokens) / per_second)
            raise GatewayError(
                429,
                f"rate limit of {self.requests_per_minute} requests per minute reached for key {self.name!r}",
                headers={"Retry-After": str(wait)},
            )
        self._tokens -= 1.0

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of this client's request slots for the life of the block, or answer 429."""
        if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
            raise GatewayError(
                429,
                f"key {self.name!r} already has {self.max_concurrent} requests in flight",
                headers={"Retry-After": "1"},
            )
        now = time.monotonic()
        self._check_token_budget(now)
        self._take_rate_token(now)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def model_limit(names: Iterable[str] | None) -> frozenset[str] | None:
    """A key's model list as a Client holds it: None (no list) is every model."""
    return None if names is None else frozenset(names)


ANONYMOUS = "anonymous"


class KeyRing:
    """Looks up the client behind an Authorization header. Changed at runtime (on the event loop)
    by the key admin routes: a key added, rotated or revoked counts from the next request."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys: list[tuple[bytes, Client]] = [
            (
                key_digest(key.key.get_secret_value()),
                Client(
                    name=key.name,
                    default_class=key.default_class,
                    models=model_limit(key.models),
                    admin=key.admin,
                    requests_per_minute=key.requests_per_minute,
                    tokens_per_minute=key.tokens_per_minute,
                    max_concurrent=key.max_concurrent,
                ),
            )
            for key in keys
        ]
        self._anonymous = Client(name=ANONYMOUS)

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> KeyRing:
        return cls(settings.resolved_keys())

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @property
    def clients(self) -> list[Client]:
        return [client for _, client in self._keys]

    def add(self, digest: bytes, client: Client) -> None:
        """A new key; its name must not be taken (the caller checks, and says why)."""
        if any(known.name == client.name for known in self.clients):
            raise ValueError(f"a key named {client.name!r} exists")
        self._keys.append((digest, client))

    def replace_digest(self, name: str, digest: bytes) -> None:
        """A new secret for the key `name`: the old one stops working, limits and counts stay."""
        self._keys = [(digest if client.name == name else old, client) for old, client in self._keys]

    def remove(self, name: str) -> None:
        self._keys = [(digest, client) for digest, client in self._keys if client.name != name]

    def client_named(self, name: str) -> Client | None:
        """The client of the key called `name` (the anonymous one when keys are off); None if no
        key has that name. For work submitted earlier and run later: the Batch API's lines."""
        if not self._keys:
            return self._anonymous if name == ANONYMOUS else None
        return next((client for _, client in self._keys if client.name == name), None)

    def authenticate(self, authorization: str | None) -> Client:
        """The client for `Authorization: Bearer <key>`; 401 when keys are on and it matches none,
        or when its key has expired."""
        if not self._keys:
            return self._anonymous
        scheme, _, token = (authorization or "").partition(" ")
        presented = key_digest(token.strip()) if scheme.lower() == "bearer" else b""
        found: Client | None = None
        for digest, client in self._keys:
            if hmac.compare_digest(digest, presented) and found is None:
                found = client
        if found is None:
            raise GatewayError(401, "missing or invalid API key (send Authorization: Bearer <key>)")
        if found.expires_at is not None and time.time() >= found.expires_at:
            raise GatewayError(401, f"API key {found.name!r} has expired; ask the gateway's admin for a new one")
        return found

    def authorize_admin(self, authorization: str | None, peer: str | None) -> Client:
        """The client behind an admin request: an admin key when keys are configured (401 without
        a valid key, 403 for a non-admin key); with no keys, any caller on loopback, nobody else."""
        if not self._keys:
            if not is_loopback(peer):
                raise GatewayError(
                    403,
                    "admin routes need an admin key; this gateway has no keys, so they answer only on loopback",
                )
            return self._anonymous
        client = self.authenticate(authorization)
        if not client.admin:
            raise GatewayError(403, f"key {client.name!r} may not use the admin routes (it is not an admin key)")
        return client


def is_loopback(host: str | None) -> bool:
    """Whether `host` (an address, or 'localhost') is this machine's loopback; unknown: no."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def exposure_warning(settings: GatewaySettings) -> str | None:
    """A warning when the gateway will listen beyond loopback with no API keys: its generation
    endpoints are then open to whoever reaches the port. None when it listens on loopback or
    has keys (from the plan, the keys file or the keys variable)."""
    if is_loopback(settings.host) or settings.auth.resolved_keys():
        return None
    return (
        f"the gateway listens on {settings.host}:{settings.port} with no API keys: anyone who can reach "
        "that port may generate (the admin routes stay loopback-only); add gateway.auth.keys, "
        "auth.keys_file or the auth.keys_env variable, or listen on 127.0.0.1"
    )
