#!/usr/bin/env python3
"""Validates one token through the Tessera sidecar and prints the outcome as JSON.

    python validate.py [--socket PATH] [--audience A] [--permission P]... [--role R]
                       [--tenant T] TOKEN        (TOKEN "-" reads it from standard input)

Prints one JSON object: ``{"status": 200, "claims": {…}}`` for a valid token, else
``{"status": 401|403|500|503, "reason": "EXPIRED", "error": "…"}``. Exit status: 0 valid,
1 rejected (401/403), 3 no verdict (503: sidecar unavailable or stale), 4 (500), 64 usage.
The socket defaults to $TESSERA_VALIDATOR_SOCKET.
"""

import argparse
import json
import sys

import tessera_auth

EXIT_BY_STATUS = {200: 0, 401: 1, 403: 1, 503: 3, 500: 4}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("token", help='the token, or "-" to read it from standard input')
    parser.add_argument("--socket", help="sidecar socket (default: $TESSERA_VALIDATOR_SOCKET)")
    parser.add_argument("--audience", default="", help="required audience")
    parser.add_argument(
        "--permission", action="append", default=[], help="required permission (repeatable)"
    )
    parser.add_argument("--role", default="", help="required role")
    parser.add_argument("--tenant", default="", help="required tenant")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return 0 if exit.code == 0 else 64
    token = sys.stdin.read().strip() if args.token == "-" else args.token
    try:
        claims = tessera_auth.authenticate(
            token,
            audience=args.audience,
            required_permissions=args.permission,
            required_role=args.role,
            tenant_id=args.tenant,
            socket=args.socket,
        )
    except tessera_auth.AuthError as error:
        print(json.dumps({"status": error.status, "reason": error.reason, "error": error.message}))
        return EXIT_BY_STATUS.get(error.status, 4)
    print(json.dumps({"status": 200, "claims": claims.as_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
