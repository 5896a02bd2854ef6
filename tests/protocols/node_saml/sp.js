"use strict";
// node-saml (@node-saml/node-saml, pinned in package-lock.json) as a SAML service provider for
// tests/protocols/test_saml_node.py: one JSON command on stdin, one JSON answer on stdout.
//
//   {"action": "request", ...}   -> {"url", "id", "instant"}   a signed HTTP-Redirect AuthnRequest
//   {"action": "validate", ...}  -> {"results": [...]}         validatePostResponseAsync, once or more
//
// Each run is a new process, so the request IDs node-saml keeps for its InResponseTo check travel
// through Python: "request" returns what node-saml saved, "validate" puts it back into node-saml's own
// in-memory cache before validating. Only node-saml's public options are used.

const { SAML } = require("@node-saml/node-saml");
const { InMemoryCacheProvider } = require("@node-saml/node-saml/lib/in-memory-cache-provider");

const PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

// Saves like node-saml's own cache and remembers the last ID saved, which is the request's ID.
class RecordingCache extends InMemoryCacheProvider {
  async saveAsync(key, value) {
    this.saved = { key, value };
    return super.saveAsync(key, value);
  }
}

function saml(command, cache) {
  const options = {
    entryPoint: command.entryPoint,
    issuer: command.spEntity,
    audience: command.spEntity,
    callbackUrl: command.acs,
    idpCert: command.idpCert || "unused-for-requests",
    identifierFormat: command.identifierFormat || PERSISTENT,
    wantAssertionsSigned: true,
    wantAuthnResponseSigned: true,
    validateInResponseTo: "always",
    acceptedClockSkewMs: command.clockSkewMs ?? 2000,
    cacheProvider: cache,
  };
  if (command.privateKey) {
    options.privateKey = command.privateKey;
  }
  // Left out, node-saml signs with its default (RSA-SHA1): the refusal test needs exactly that.
  if (command.signatureAlgorithm) {
    options.signatureAlgorithm = command.signatureAlgorithm;
  }
  return new SAML(options);
}

async function request(command) {
  const cache = new RecordingCache({});
  const url = await saml(command, cache).getAuthorizeUrlAsync(command.relayState || "", undefined, {});
  return { url, id: cache.saved.key, instant: cache.saved.value };
}

function plain(profile) {
  // The profile carries accessor functions (getAssertionXml, …); JSON drops those, keep the assertion text.
  const out = JSON.parse(JSON.stringify(profile));
  out.assertionXml = profile.getAssertionXml ? profile.getAssertionXml() : null;
  return out;
}

async function validate(command) {
  const cache = new InMemoryCacheProvider({});
  for (const [id, instant] of Object.entries(command.requests || {})) {
    await cache.saveAsync(id, instant);
  }
  const sp = saml(command, cache);
  const results = [];
  for (let i = 0; i < (command.times || 1); i++) {
    try {
      const { profile, loggedOut } = await sp.validatePostResponseAsync({ SAMLResponse: command.samlResponse });
      results.push({ ok: true, loggedOut, profile: profile ? plain(profile) : null });
    } catch (err) {
      results.push({ ok: false, error: String(err && err.message ? err.message : err) });
    }
  }
  return { results };
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  const command = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const actions = { request, validate };
  if (!actions[command.action]) {
    throw new Error(`unknown action ${command.action}`);
  }
  process.stdout.write(JSON.stringify(await actions[command.action](command)));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
