#!/usr/bin/env node
'use strict';
/**
 * Validates one token through the Tessera sidecar and prints the outcome as JSON.
 *
 *   node validate.js [--socket PATH] [--audience A] [--permission P]... [--role R]
 *                    [--tenant T] TOKEN        (TOKEN "-" reads it from standard input)
 *
 * Prints one JSON object: {"status": 200, "claims": {…}} for a valid token, else
 * {"status": 401|403|500|503, "reason": "EXPIRED", "error": "…"}. Exit status: 0 valid,
 * 1 rejected (401/403), 3 no verdict (503: sidecar unavailable or stale), 4 (500),
 * 64 usage. The socket defaults to $TESSERA_VALIDATOR_SOCKET.
 */

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { AuthError, authenticate } = require('./tessera-auth');

const EXIT_BY_STATUS = { 200: 0, 401: 1, 403: 1, 503: 3, 500: 4 };

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        socket: { type: 'string' },
        audience: { type: 'string', default: '' },
        permission: { type: 'string', multiple: true, default: [] },
        role: { type: 'string', default: '' },
        tenant: { type: 'string', default: '' },
      },
    });
  } catch (error) {
    process.stderr.write(`validate.js: ${error.message}\n`);
    return 64;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write('usage: node validate.js [--socket PATH] [--permission P]... TOKEN|-\n');
    return 64;
  }
  const [argument] = parsed.positionals;
  const token = argument === '-' ? fs.readFileSync(0, 'utf8').trim() : argument;
  const { values } = parsed;
  try {
    const claims = await authenticate(token, {
      socket: values.socket,
      audience: values.audience,
      requiredPermissions: values.permission,
      requiredRole: values.role,
      tenantId: values.tenant,
    });
    console.log(JSON.stringify({ status: 200, claims }));
    return 0;
  } catch (error) {
    if (!(error instanceof AuthError)) {
      throw error;
    }
    console.log(JSON.stringify({ status: error.status, reason: error.reason, error: error.detail }));
    return EXIT_BY_STATUS[error.status] ?? 4;
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`validate.js: ${error.stack || error}\n`);
    process.exit(4);
  },
);
