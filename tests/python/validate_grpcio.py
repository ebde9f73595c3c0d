#!/usr/bin/env python3
"""Role: validates tokens over the sidecar's Unix socket with Python grpcio, as a Python
service would. Used by the end-to-end tests (tests/e2e/sidecar/clients.rs).

Usage: validate_grpcio.py --stubs DIR --socket PATH --requests FILE [--authority NAME]

DIR holds stubs generated from proto/ with grpc_tools.protoc (tessera/v1/*_pb2*.py).
FILE is a JSON list of {"token": ..., "audience": ...}; standard output is a JSON list
with, per request, either {"valid", "reason", "subject", "kid", "claims_json"} or
{"error": {"code", "details"}} when the RPC itself failed. --authority sets the HTTP/2
:authority (grpc.default_authority); without it grpcio derives one from the socket path.
"""

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory of the generated stubs")
    parser.add_argument("--socket", required=True, help="the sidecar's Unix socket")
    parser.add_argument("--requests", required=True, help="JSON file of requests")
    parser.add_argument("--authority", help="HTTP/2 :authority to send")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    args = parser.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc
    from tessera.v1 import validator_pb2, validator_pb2_grpc

    options = []
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    with open(args.requests, encoding="utf-8") as file:
        requests = json.load(file)
    results = []
    with grpc.insecure_channel(f"unix:{args.socket}", options=options) as channel:
        stub = validator_pb2_grpc.ValidatorServiceStub(channel)
        for request in requests:
            message = validator_pb2.ValidateTokenRequest(
                token=request["token"], audience=request.get("audience", "")
            )
            try:
                response = stub.ValidateToken(message, timeout=args.timeout)
            except grpc.RpcError as error:
                results.append(
                    {"error": {"code": error.code().name, "details": error.details()}}
                )
                continue
            results.append(
                {
                    "valid": response.valid,
                    "reason": validator_pb2.Reason.Name(response.reason),
                    "subject": response.claims.subject,
                    "kid": response.claims.kid,
                    "claims_json": response.claims_json,
                }
            )
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
