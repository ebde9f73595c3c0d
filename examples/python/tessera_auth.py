"""Token validation for a Python service, through the Tessera validator sidecar.

The sidecar runs next to the service and answers ``ValidatorService.ValidateToken`` on a
Unix socket; validation never leaves the host. This module wraps that call in one
function, :func:`authenticate`, which returns the token's claims or raises
:class:`AuthError` carrying the HTTP answer the service should give:

* 401 (``WWW-Authenticate: Bearer error="invalid_token"``): the token itself is bad —
  malformed, too large, forged or tampered, expired or not yet valid, revoked (the token,
  its session or user, or its signing key), from another issuer, of the wrong type. The
  client should obtain a new token (refresh or log in again).
* 403 (``error="insufficient_scope"``): a genuine token that may not do this — missing
  permission or role, another audience or tenant. A new token of the same user will not
  help; do not retry.
* 503 (with ``Retry-After``): Tessera cannot vouch for any token right now — the sidecar
  is not reachable, overloaded or failing, or its trust bundle is stale and it fails
  closed. Never treat this as "valid"; never treat it as the user's fault either.
* 500: the request itself was wrong (a token type Tessera does not sign, or the socket
  answers UNIMPLEMENTED: not a Tessera sidecar) — a bug or misconfiguration here.

The socket path comes from ``TESSERA_VALIDATOR_SOCKET`` (the variable the Kubernetes
example sets) unless given. The channel uses grpcio's plain defaults:
``grpc.insecure_channel("unix:" + path)``, created once and reused (channels are
thread-safe and multiplex calls).

Stubs: run ``generate.sh`` and put its output directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Iterable, Optional

import grpc

from tessera.v1 import validator_pb2, validator_pb2_grpc

#: Where the sidecar listens when the caller and the environment name no socket.
DEFAULT_SOCKET = "/run/tessera/sidecar.sock"
#: Seconds a validation may take; the sidecar answers in well under a millisecond.
DEFAULT_TIMEOUT_SECONDS = 2.0

_Reason = validator_pb2.Reason

#: Every rejection reason of ``tessera.v1.Reason`` and the HTTP status it maps to. A reason
#: added to the proto later and not listed here is answered 401 (fail closed).
STATUS_BY_REASON = {
    # The token is not a token Tessera signed, or no longer one it vouches for: 401.
    _Reason.MALFORMED: 401,
    _Reason.TOO_LARGE: 401,
    _Reason.UNKNOWN_KID: 401,
    _Reason.ALGORITHM_MISMATCH: 401,
    _Reason.BAD_SIGNATURE: 401,
    _Reason.EXPIRED: 401,
    _Reason.NOT_YET_VALID: 401,
    _Reason.WRONG_ISSUER: 401,
    _Reason.WRONG_TOKEN_TYPE: 401,
    _Reason.REVOKED: 401,
    _Reason.KEY_REVOKED: 401,
    _Reason.LIFETIME_TOO_LONG: 401,
    _Reason.KEY_NOT_ACTIVE: 401,
    # A genuine token that is not allowed here: 403.
    _Reason.WRONG_AUDIENCE: 403,
    _Reason.INSUFFICIENT_PERMISSIONS: 403,
    _Reason.WRONG_ROLE: 403,
    _Reason.WRONG_TENANT: 403,
    # The sidecar cannot vouch for anything right now: 503.
    _Reason.BUNDLE_STALE: 503,
    # This service asked for a token type Tessera does not sign: our bug, 500.
    _Reason.UNKNOWN_TOKEN_TYPE: 500,
}

#: gRPC status codes (the call failed; no verdict) that mean a misconfigured caller or
#: socket (something else listens there, or this code is older than the sidecar): 500.
#: Every other failure means "no verdict now, try again later": 503.
_MISCONFIGURED_CODES = {
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
}


@dataclasses.dataclass(frozen=True)
class Claims:
    """The claims of a valid token."""

    subject: str
    tenant_id: str
    role: str
    permissions: tuple
    session_id: str
    jti: str
    audience: str
    issuer: str
    token_type: str
    mfa_verified: bool
    features: tuple
    kid: str
    #: ``exp`` and ``iat`` as seconds since the epoch.
    expires_at: int
    issued_at: int
    #: The full claims object as JSON text (custom claims included).
    claims_json: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class AuthError(Exception):
    """A request that must not proceed, with the HTTP answer to give."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        #: HTTP status: 401, 403, 500 or 503.
        self.status = status
        #: The ``tessera.v1.Reason`` name (``EXPIRED``, ``REVOKED``, …), ``MISSING_TOKEN``;
        #: when the sidecar gave no verdict, ``UNAVAILABLE`` (503) or ``SIDECAR_ERROR``
        #: (500: the call itself is refused, e.g. UNIMPLEMENTED on a wrong socket).
        self.reason = reason
        self.message = message

    def headers(self) -> dict:
        """Response headers for this error (RFC 6750 for 401 and 403)."""
        if self.status == 401:
            if self.reason == "MISSING_TOKEN":
                return {"WWW-Authenticate": 'Bearer realm="tessera"'}
            return {
                "WWW-Authenticate": 'Bearer realm="tessera", error="invalid_token", '
                f'error_description="{self.reason.lower()}"'
            }
        if self.status == 403:
            return {
                "WWW-Authenticate": 'Bearer realm="tessera", error="insufficient_scope", '
                f'error_description="{self.reason.lower()}"'
            }
        if self.status == 503:
            return {"Retry-After": "1"}
        return {}


def status_for(reason: int) -> int:
    """The HTTP status of a rejection ``reason`` (401 for a reason this code predates)."""
    return STATUS_BY_REASON.get(reason, 401)


def socket_path(path: Optional[str] = None) -> str:
    """The sidecar's socket: ``path``, else ``TESSERA_VALIDATOR_SOCKET``, else the default."""
    return path or os.environ.get("TESSERA_VALIDATOR_SOCKET") or DEFAULT_SOCKET


_MESSAGES = {
    401: "the token is not valid; obtain a new one",
    403: "the token does not allow this request",
    500: "the service asked for something Tessera cannot check",
    503: "token validation is unavailable; retry shortly",
}

_channels: dict = {}
_channels_lock = threading.Lock()


def _stub(path: str) -> validator_pb2_grpc.ValidatorServiceStub:
    with _channels_lock:
        channel = _channels.get(path)
        if channel is None:
            # Plain defaults: no channel options at all.
            channel = grpc.insecure_channel("unix:" + path)
            _channels[path] = channel
    return validator_pb2_grpc.ValidatorServiceStub(channel)


def token_from_header(authorization: Optional[str]) -> str:
    """The token of an ``Authorization: Bearer …`` header; :class:`AuthError` 401 otherwise."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "MISSING_TOKEN", "an Authorization: Bearer header is required")
    return token.strip()


def authenticate(
    token: str,
    *,
    audience: str = "",
    required_permissions: Iterable[str] = (),
    required_role: str = "",
    tenant_id: str = "",
    token_type: str = "",
    socket: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Claims:
    """Validates ``token`` through the sidecar and returns its claims.

    Raises :class:`AuthError` with the HTTP status to answer when the token is rejected or
    the sidecar gives no verdict. Empty requirements are not checked (any audience the
    sidecar accepts, any role, any tenant; ``token_type`` empty means an access token).
    """
    if not token:
        raise AuthError(401, "MISSING_TOKEN", "no token")
    request = validator_pb2.ValidateTokenRequest(
        token=token,
        audience=audience,
        required_permissions=list(required_permissions),
        required_role=required_role,
        tenant_id=tenant_id,
        token_type=token_type,
    )
    try:
        response = _stub(socket_path(socket)).ValidateToken(request, timeout=timeout)
    except grpc.RpcError as error:
        code = error.code()
        if code in _MISCONFIGURED_CODES:
            status, reason = 500, "SIDECAR_ERROR"
        else:
            status, reason = 503, "UNAVAILABLE"
        raise AuthError(
            status, reason, f"validator sidecar: {code.name}: {error.details()}"
        ) from None
    if not response.valid:
        if response.reason == _Reason.REASON_UNSPECIFIED:
            # A rejection without a reason is a broken sidecar: never let it through.
            raise AuthError(500, "REASON_UNSPECIFIED", "rejected without a reason")
        try:
            name = _Reason.Name(response.reason)
        except ValueError:  # a reason newer than these stubs
            name = f"REASON_{response.reason}"
        status = status_for(response.reason)
        raise AuthError(status, name, _MESSAGES[status])
    claims = response.claims
    return Claims(
        subject=claims.subject,
        tenant_id=claims.tenant_id,
        role=claims.role,
        permissions=tuple(claims.permissions),
        session_id=claims.session_id,
        jti=claims.jti,
        audience=claims.audience,
        issuer=claims.issuer,
        token_type=claims.token_type,
        mfa_verified=claims.mfa_verified,
        features=tuple(claims.features),
        kid=claims.kid,
        expires_at=claims.expires_at.seconds,
        issued_at=claims.issued_at.seconds,
        claims_json=response.claims_json,
    )
