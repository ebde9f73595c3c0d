'use strict';
/**
 * Token validation for a Node.js service, through the Tessera validator sidecar.
 *
 * The sidecar runs next to the service and answers `tessera.v1.ValidatorService/
 * ValidateToken` on a Unix socket; validation never leaves the host. `authenticate(token,
 * options)` resolves to the token's claims or rejects with an `AuthError` carrying the
 * HTTP answer to give:
 *
 *  - 401 (`WWW-Authenticate: Bearer error="invalid_token"`): the token itself is bad —
 *    malformed, too large, forged or tampered, expired or not yet valid, revoked (token,
 *    session, user or signing key), from another issuer, of the wrong type. The client
 *    should obtain a new token.
 *  - 403 (`error="insufficient_scope"`): a genuine token that may not do this — missing
 *    permission or role, another audience or tenant. Do not retry.
 *  - 503 (`Retry-After`): Tessera cannot vouch for any token right now — the sidecar is not
 *    reachable, overloaded or failing, or its trust bundle is stale and it fails closed.
 *  - 500: this service asked for a token type Tessera does not sign, or the socket answers
 *    UNIMPLEMENTED (not a Tessera sidecar): a bug or misconfiguration here.
 *
 * The proto files are loaded at runtime with @grpc/proto-loader from `TESSERA_PROTO_DIR`
 * (default: the repository's proto/). The socket comes from `TESSERA_VALIDATOR_SOCKET`
 * unless given. One client per socket, created on first use and reused.
 */

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

/** Where the sidecar listens when neither the caller nor the environment says. */
const DEFAULT_SOCKET = '/run/tessera/sidecar.sock';
/** Milliseconds a validation may take; the sidecar answers in well under one. */
const DEFAULT_TIMEOUT_MS = 2000;

/**
 * Every rejection reason of `tessera.v1.Reason` and its HTTP status. A reason added to
 * the proto later and not listed here is answered 401 (fail closed).
 */
const STATUS_BY_REASON = Object.freeze({
  // The token is not one Tessera signed, or no longer one it vouches for: 401.
  MALFORMED: 401,
  TOO_LARGE: 401,
  UNKNOWN_KID: 401,
  ALGORITHM_MISMATCH: 401,
  BAD_SIGNATURE: 401,
  EXPIRED: 401,
  NOT_YET_VALID: 401,
  WRONG_ISSUER: 401,
  WRONG_TOKEN_TYPE: 401,
  REVOKED: 401,
  KEY_REVOKED: 401,
  LIFETIME_TOO_LONG: 401,
  KEY_NOT_ACTIVE: 401,
  // A genuine token that is not allowed here: 403.
  WRONG_AUDIENCE: 403,
  INSUFFICIENT_PERMISSIONS: 403,
  WRONG_ROLE: 403,
  WRONG_TENANT: 403,
  // The sidecar cannot vouch for anything right now: 503.
  BUNDLE_STALE: 503,
  // This service asked for a token type Tessera does not sign: our bug, 500.
  UNKNOWN_TOKEN_TYPE: 500,
});

/**
 * gRPC codes (the call failed; no verdict) that mean a misconfigured caller or socket
 * (something else listens there, or this code is older than the sidecar): 500. Every
 * other failure means "no verdict now, try again later": 503.
 */
const MISCONFIGURED_CODES = new Set([
  grpc.status.UNIMPLEMENTED,
  grpc.status.INVALID_ARGUMENT,
  grpc.status.UNAUTHENTICATED,
  grpc.status.PERMISSION_DENIED,
]);

const MESSAGES = Object.freeze({
  401: 'the token is not valid; obtain a new one',
  403: 'the token does not allow this request',
  500: 'the service asked for something Tessera cannot check',
  503: 'token validation is unavailable; retry shortly',
});

/** A request that must not proceed, with the HTTP answer to give. */
class AuthError extends Error {
  /**
   * @param {number} status 401, 403, 500 or 503
   * @param {string} reason the `tessera.v1.Reason` name, `MISSING_TOKEN`, or (no verdict)
   *   `UNAVAILABLE` (503) or `SIDECAR_ERROR` (500)
   * @param {string} message
   */
  constructor(status, reason, message) {
    super(`${status} ${reason}: ${message}`);
    this.name = 'AuthError';
    this.status = status;
    this.reason = reason;
    this.detail = message;
  }

  /** Response headers for this error (RFC 6750 for 401 and 403). */
  headers() {
    const description = this.reason.toLowerCase();
    if (this.status === 401 && this.reason === 'MISSING_TOKEN') {
      return { 'WWW-Authenticate': 'Bearer realm="tessera"' };
    }
    if (this.status === 401) {
      return {
        'WWW-Authenticate': `Bearer realm="tessera", error="invalid_token", error_description="${description}"`,
      };
    }
    if (this.status === 403) {
      return {
        'WWW-Authenticate': `Bearer realm="tessera", error="insufficient_scope", error_description="${description}"`,
      };
    }
    return this.status === 503 ? { 'Retry-After': '1' } : {};
  }
}

/** The HTTP status of a rejection reason name (401 for a reason this code predates). */
function statusFor(reason) {
  return Object.hasOwn(STATUS_BY_REASON, reason) ? STATUS_BY_REASON[reason] : 401;
}

/** The sidecar's socket: `explicit`, else `TESSERA_VALIDATOR_SOCKET`, else the default. */
function socketPath(explicit) {
  return explicit || process.env.TESSERA_VALIDATOR_SOCKET || DEFAULT_SOCKET;
}

let validatorService;
const clients = new Map();

function loadValidatorService() {
  if (!validatorService) {
    const protoDir = process.env.TESSERA_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');
    const definition = protoLoader.loadSync('tessera/v1/validator.proto', {
      includeDirs: [protoDir],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
    });
    validatorService = grpc.loadPackageDefinition(definition).tessera.v1.ValidatorService;
  }
  return validatorService;
}

function client(socket) {
  let found = clients.get(socket);
  if (!found) {
    const ValidatorService = loadValidatorService();
    found = new ValidatorService(`unix:${socket}`, grpc.credentials.createInsecure());
    clients.set(socket, found);
  }
  return found;
}

/** The token of an `Authorization: Bearer …` header; throws AuthError 401 otherwise. */
function tokenFromHeader(authorization) {
  const match = /^\s*bearer\s+(\S+)\s*$/i.exec(authorization || '');
  if (!match) {
    throw new AuthError(401, 'MISSING_TOKEN', 'an Authorization: Bearer header is required');
  }
  return match[1];
}

function seconds(timestamp) {
  return timestamp ? Number(timestamp.seconds) : 0;
}

/**
 * Validates `token` through the sidecar.
 *
 * @param {string} token the compact JWS (without `Bearer `)
 * @param {object} [options] `audience`, `requiredPermissions` (array), `requiredRole`,
 *   `tenantId`, `tokenType` (empty: not checked / access), `socket`, `timeoutMs`
 * @returns {Promise<object>} the claims (snake_case, as in the proto) plus `claims_json`
 * @throws {AuthError} when the token is rejected or the sidecar gives no verdict
 */
function authenticate(token, options = {}) {
  if (!token) {
    return Promise.reject(new AuthError(401, 'MISSING_TOKEN', 'no token'));
  }
  const request = {
    token,
    audience: options.audience || '',
    required_permissions: options.requiredPermissions || [],
    required_role: options.requiredRole || '',
    tenant_id: options.tenantId || '',
    token_type: options.tokenType || '',
  };
  const deadline = new Date(Date.now() + (options.timeoutMs || DEFAULT_TIMEOUT_MS));
  return new Promise((resolve, reject) => {
    client(socketPath(options.socket)).ValidateToken(request, { deadline }, (error, response) => {
      if (error) {
        const [status, reason] = MISCONFIGURED_CODES.has(error.code)
          ? [500, 'SIDECAR_ERROR']
          : [503, 'UNAVAILABLE'];
        reject(new AuthError(status, reason, `validator sidecar: ${error.message}`));
        return;
      }
      if (!response.valid) {
        if (response.reason === 'REASON_UNSPECIFIED') {
          // A rejection without a reason is a broken sidecar: never let it through.
          reject(new AuthError(500, 'REASON_UNSPECIFIED', 'rejected without a reason'));
          return;
        }
        const reason = String(response.reason);
        const status = statusFor(reason);
        reject(new AuthError(status, reason, MESSAGES[status]));
        return;
      }
      const claims = response.claims;
      resolve({
        subject: claims.subject,
        tenant_id: claims.tenant_id,
        role: claims.role,
        permissions: claims.permissions,
        session_id: claims.session_id,
        jti: claims.jti,
        audience: claims.audience,
        issuer: claims.issuer,
        token_type: claims.token_type,
        mfa_verified: claims.mfa_verified,
        features: claims.features,
        kid: claims.kid,
        expires_at: seconds(claims.expires_at),
        issued_at: seconds(claims.issued_at),
        claims_json: response.claims_json,
      });
    });
  });
}

module.exports = {
  AuthError,
  DEFAULT_SOCKET,
  STATUS_BY_REASON,
  authenticate,
  loadValidatorService,
  socketPath,
  statusFor,
  tokenFromHeader,
};
