// A real OpenID provider for the access tests: node_modules/oidc-provider with one client
// and two users in different groups. Settings come from a JSON file named by argv[2]:
//   { port, issuer, jwks: {keys: [...private JWKs]}, client: {client_id, client_secret,
//     redirect_uris, post_logout_redirect_uris}, users: {name: {email, groups}}, id_token_ttl }
// It prints "listening <port>" once it accepts connections.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const { users } = settings;

const provider = new Provider(settings.issuer, {
  clients: [{
    ...settings.client,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: settings.jwks,
  // The dev login form (devInteractions) takes a login name; the name picks the account.
  findAccount: async (ctx, id) => (users[id] ? {
    accountId: id,
    claims: async () => ({ sub: id, email: users[id].email, groups: users[id].groups }),
  } : undefined),
  // No consent screen: the test client is first-party.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  claims: { openid: ['sub'], email: ['email'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  // The scopes' claims in the ID token itself (the proxy reads no userinfo endpoint).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  ttl: { IdToken: settings.id_token_ttl ?? 3600 },
  features: { devInteractions: { enabled: true } },
});

provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`listening ${settings.port}`);
});
