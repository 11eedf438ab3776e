"""Who may act through the dashboard (cancel, resume): a pure policy, decided by the bind address.

Reading is open to whoever can reach the port: the dashboard shows what ``theodolite jobs``
and ``status`` show. Acting is not, once the port is reachable from other machines:

* bound to a loopback address (``127.0.0.1``, ``::1``, ``localhost``; any ``127.x`` address
  is loopback too), only this machine's users reach it, as they reach ``theodolite cancel``:
  actions need no token;
* bound to any other address (``0.0.0.0``, a LAN address), ``THEODOLITE_DASHBOARD_TOKEN``
  must be set when the dashboard starts (:func:`policy_for` refuses otherwise), and every
  action must carry ``Authorization: Bearer <token>`` (compared in constant time). The policy
  goes by the bind address, not by where a request comes from: a request through
  ``127.0.0.1`` to a dashboard bound to ``0.0.0.0`` needs the token as well (a proxy on this
  machine would otherwise open actions to everyone).

Without a token, an action that a browser sends from another site's page (its ``Origin``
names another host than the request's ``Host``) is refused: a page elsewhere cannot make a
visitor's browser cancel jobs on a loopback dashboard (:func:`same_origin`). With a token that
check is not needed (another site's page cannot send the header without this server's CORS
consent, which it never gives) and is not made: a proxy in front may rewrite ``Host``.
:meth:`AccessPolicy.refusal_of` is the one decision the application asks.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

TOKEN_VARIABLE = "THEODOLITE_DASHBOARD_TOKEN"
CROSS_SITE = "a request from another site's page may not act on this dashboard"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that only read: never need a token."""
LOOPBACK_NAMES = frozenset({"localhost"})


class AccessError(ValueError):
    """The dashboard cannot start with this address and token."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class AccessPolicy:
    """Which requests may act, for a dashboard bound to ``host`` (``token``: the one to
    present, None when actions need none)."""

    host: str
    token: str | None

    @property
    def token_required(self) -> bool:
        return self.token is not None

    def allows(self, method: str, authorization: str | None) -> bool:
        """Whether a request with this method and ``Authorization`` header may go on."""
        if method.upper() in SAFE_METHODS or self.token is None:
            return True
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode("utf-8"), self.token.encode("utf-8"))

    def refusal_of(self, method: str, authorization: str | None, origin: str | None, host: str | None) -> str | None:
        """Why a request (its method, ``Authorization``, ``Origin`` and ``Host`` headers) may
        not go on; None when it may."""
        if method.upper() in SAFE_METHODS:
            return None
        if self.token is None:
            return None if same_origin(origin, host) else CROSS_SITE
        return None if self.allows(method, authorization) else self.refusal()

    def refusal(self) -> str:
        """What a refused action is told."""
        return (f"this dashboard listens on {self.host}: actions need the token in {TOKEN_VARIABLE} "
                f"(Authorization: Bearer ...)")


def policy_for(host: str, token: str | None) -> AccessPolicy:
    """The policy of a dashboard bound to ``host``, with ``token`` (the variable's value, None or
    empty when unset). Raises :class:`AccessError` for a non-loopback address without a token."""
    if is_loopback(host):
        return AccessPolicy(host, None)
    if not token or not token.strip():
        raise AccessError(f"the dashboard would listen on {host}, which other machines can reach: set {TOKEN_VARIABLE} "
                          f"(actions then need it as 'Authorization: Bearer <token>'), or bind a loopback address "
                          f"(--host 127.0.0.1)")
    return AccessPolicy(host, token.strip())


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` header (absent: not a cross-site browser request) names the
    host and port of its ``Host`` header."""
    if origin is None:
        return True
    if not host:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return netloc.lower() == host.strip().lower()
