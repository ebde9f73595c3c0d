#!/usr/bin/env python3
"""A tiny HTTP service protected by Tessera (the demo application of docker-compose.yml).

    python demo.py serve   # GET /invoices needs a token with the invoices:read permission
    python demo.py check   # end-to-end self-test against the running `serve`; exit 0 if OK

`serve` answers each request from the sidecar's verdict (``tessera_auth.authenticate``):
200 with the caller's claims, or the 401/403/503 that ``AuthError`` carries. `check` gets
real tokens from the issuer with the demo's own credential (an `issue`-scoped client the
issuer bootstraps into a shared volume) and asserts the served answers: a valid token is
accepted, a missing or tampered one is 401, one without the permission is 403.

Environment:
  DEMO_HTTP_ADDR             where `serve` listens [0.0.0.0:8000]; `check` calls it
  TESSERA_VALIDATOR_SOCKET   the sidecar's socket [/run/tessera/sidecar.sock]
  TESSERA_ISSUER_ADDR        the issuer's gRPC address, for `check` [127.0.0.1:50051]
  DEMO_CREDENTIAL_FILE       the demo client's credential, for `check`
  DEMO_TENANT                the tenant the demo's tokens belong to [demo]
"""

import http.client
import http.server
import json
import os
import sys

import grpc

import tessera_auth
from tessera.v1 import tokens_pb2, tokens_pb2_grpc

REQUIRED_PERMISSION = "invoices:read"


def http_addr():
    host, _, port = os.environ.get("DEMO_HTTP_ADDR", "0.0.0.0:8000").rpartition(":")
    return host, int(port)


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /invoices (authenticated) and GET /healthz."""

    def do_GET(self):
        if self.path == "/healthz":
            return self.answer(200, {"status": "ok"})
        if self.path != "/invoices":
            return self.answer(404, {"error": "not found"})
        try:
            token = tessera_auth.token_from_header(self.headers.get("Authorization"))
            claims = tessera_auth.authenticate(
                token, required_permissions=[REQUIRED_PERMISSION]
            )
        except tessera_auth.AuthError as error:
            return self.answer(
                error.status, {"error": error.reason, "message": error.message}, error.headers()
            )
        self.answer(
            200,
            {"subject": claims.subject, "tenant_id": claims.tenant_id, "invoices": []},
        )

    def answer(self, status, body, headers=None):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write("demo: %s\n" % (format % args))


def serve():
    server = http.server.ThreadingHTTPServer(http_addr(), Handler)
    print(f"demo: listening on {os.environ.get('DEMO_HTTP_ADDR', '0.0.0.0:8000')}", flush=True)
    server.serve_forever()


def issue_token(permissions):
    """An access token from the issuer, requested with the demo's own credential."""
    with open(os.environ["DEMO_CREDENTIAL_FILE"]) as file:
        credential = file.read().strip()
    target = os.environ.get("TESSERA_ISSUER_ADDR", "127.0.0.1:50051")
    target = target.removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        response = tokens_pb2_grpc.TokenServiceStub(channel).IssueAccessToken(
            tokens_pb2.IssueAccessTokenRequest(
                subject="demo-user",
                tenant_id=os.environ.get("DEMO_TENANT", "demo"),
                role="viewer",
                permissions=permissions,
                ttl_seconds=300,
            ),
            metadata=[("authorization", f"Bearer {credential}")],
            timeout=10,
        )
    return response.token


def call(token):
    """GET /invoices on the running `serve`, with `token` (None: no header)."""
    host, port = http_addr()
    connection = http.client.HTTPConnection(
        "127.0.0.1" if host in ("0.0.0.0", "") else host, port, timeout=10
    )
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    connection.request("GET", "/invoices", headers=headers)
    response = connection.getresponse()
    body = json.loads(response.read() or b"{}")
    return response.status, body


def tampered(token):
    signing_input, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    replacement = "B" if signature[middle] == "A" else "A"
    return f"{signing_input}.{signature[:middle]}{replacement}{signature[middle + 1:]}"


def check():
    allowed = issue_token([REQUIRED_PERMISSION])
    not_allowed = issue_token([])
    cases = [
        ("valid token", allowed, 200, None),
        ("no token", None, 401, "MISSING_TOKEN"),
        ("tampered token", tampered(allowed), 401, "BAD_SIGNATURE"),
        ("token without invoices:read", not_allowed, 403, "INSUFFICIENT_PERMISSIONS"),
    ]
    failed = False
    for name, token, status, reason in cases:
        got_status, body = call(token)
        ok = got_status == status and (reason is None or body.get("error") == reason)
        if status == 200:
            ok = ok and body.get("subject") == "demo-user"
        print(f"{'ok' if ok else 'FAILED'}: {name}: {got_status} {json.dumps(body)}", flush=True)
        failed = failed or not ok
    if failed:
        return 1
    print("demo check passed", flush=True)
    return 0


def main(argv):
    if argv[1:] == ["serve"]:
        serve()
        return 0
    if argv[1:] == ["check"]:
        return check()
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
