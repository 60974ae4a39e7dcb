// An independent OpenID provider for Lakegate's end-to-end tests: panva/oidc-provider on loopback, issuing
// JWT access tokens (RS256, audience "lakegate") by the client credentials grant, with group and region claims.
// Usage: node provider.mjs PORT   (prints "ready <issuer>" once listening). Token requests name the resource
// `urn:lakegate` (or omit it); the audience of the issued token is `lakegate`.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rsa-1', use: 'sig', alg: 'RS256' };

// Each client stands for one person of the demo world (the token's `sub` is the client id).
const people = {
  alice: { groups: ['analysts'], region: 'EU' },
  bob: { groups: ['analysts'], region: 'US' },
  carol: { groups: ['hr'] },
};

const provider = new Provider(issuer, {
  clients: Object.keys(people).map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  })),
  jwks: { keys: [jwk] },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:lakegate',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        audience: 'lakegate',
        scope: 'read write',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: { ClientCredentials: 600 },
  extraTokenClaims: (ctx, token) => people[token.clientId] || {},
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
