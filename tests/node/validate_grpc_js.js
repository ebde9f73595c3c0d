#!/usr/bin/env node
// Role: validates tokens over the sidecar's Unix socket with @grpc/grpc-js and
// @grpc/proto-loader, with the library's default channel options, as a Node.js service
// would. Used by the end-to-end tests (tests/e2e/uds_clients.rs); the packages come from
// tests/node/setup.sh (run with NODE_PATH=<install dir>/node_modules).
//
// Usage: validate_grpc_js.js --proto-root DIR --socket PATH --requests FILE
//
// DIR is the workspace's proto/ directory (loaded at run time, no generated code). FILE is
// a JSON list of {"token": ..., "audience": ...}; standard output is a JSON list with, per
// request, either {"valid", "reason", "subject", "kid", "claims_json"} or
// {"error": {"code", "details"}} when the RPC itself failed.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!flag.startsWith("--") || value === undefined) {
      throw new Error(`usage: validate_grpc_js.js --proto-root DIR --socket PATH --requests FILE (at ${flag})`);
    }
    args[flag.slice(2)] = value;
  }
  for (const required of ["proto-root", "socket", "requests"]) {
    if (!args[required]) {
      throw new Error(`missing --${required}`);
    }
  }
  return args;
}

function validate(client, request) {
  return new Promise((resolve) => {
    const deadline = new Date(Date.now() + 10000);
    client.ValidateToken(request, { deadline }, (error, response) => {
      if (error) {
        resolve({ error: { code: grpc.status[error.code] || String(error.code), details: error.details } });
        return;
      }
      resolve({
        valid: response.valid,
        reason: response.reason,
        subject: response.claims ? response.claims.subject : "",
        kid: response.claims ? response.claims.kid : "",
        claims_json: response.claims_json,
      });
    });
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadSync(path.join("tessera", "v1", "validator.proto"), {
    includeDirs: [args["proto-root"]],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
  });
  const tessera = grpc.loadPackageDefinition(definition).tessera.v1;
  // Default options: grpc-js picks the :authority for a `unix:` target itself.
  const client = new tessera.ValidatorService(`unix:${args.socket}`, grpc.credentials.createInsecure());
  const requests = JSON.parse(fs.readFileSync(args.requests, "utf8"));
  const results = [];
  for (const request of requests) {
    results.push(await validate(client, { token: request.token, audience: request.audience || "" }));
  }
  client.close();
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
