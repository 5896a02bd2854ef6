// The peer for bench/oidc.py: panva's oidc-provider (v9, OpenID certified) with its in-memory adapter.
//
//   node server.js PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// Listens on 127.0.0.1:PORT with issuer http://127.0.0.1:PORT and prints "ready" once listening.
// One confidential client (client_secret_basic) may use authorization_code, refresh_token and
// client_credentials. Keys: one ES256 and one RS256 key (as the portal publishes), generated at start.
// Access tokens for the resource server urn:alacop:bench are RFC 9068 JWTs signed with ES256; ID
// tokens are ES256 too. Refresh tokens rotate on every use, as the portal's do. Lifetimes match the
// portal's defaults (access tokens 5 min, ID tokens 5 min, refresh tokens 8 h).
// The interaction (sign-in and consent) is answered at once for a made-up account: the benchmark
// only needs real codes and refresh tokens, minted through the real authorization endpoint.
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
if (!port || !clientId || !clientSecret || !redirectUri) {
  console.error('usage: node server.js PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const RESOURCE = 'urn:alacop:bench';

function privateJwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig' };
}

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: {
    keys: [
      privateJwk('ec', { namedCurve: 'P-256' }, 'ES256'),
      privateJwk('rsa', { modulusLength: 2048 }, 'RS256'),
    ],
  },
  cookies: { keys: [clientSecret] },
  scopes: ['openid', 'offline_access', 'api:read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Every authorization and token request without a resource gets this one, so the code flow's
      // and the refresh's access tokens are JWTs too.
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) throw new Provider.errors.InvalidTarget();
        return {
          scope: 'api:read',
          audience: RESOURCE,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    ClientCredentials: 300,
    Grant: 14 * 24 * 3600,
    IdToken: 300,
    Interaction: 600,
    RefreshToken: 8 * 3600,
    Session: 14 * 24 * 3600,
  },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
};

const provider = new Provider(issuer, configuration);

// The interaction: sign-in and consent for every requested scope and the resource, answered at once.
provider.use(async (ctx, next) => {
  const match = ctx.method === 'GET' && ctx.path.match(/^\/interaction\/([\w-]+)$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const accountId = details.session?.accountId ?? `bench-${details.uid}`;
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope('openid offline_access');
  grant.addResourceScope(RESOURCE, 'api:read');
  const grantId = await grant.save();
  const result = { login: { accountId }, consent: { grantId } };
  const location = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(location);
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log('ready');
});
