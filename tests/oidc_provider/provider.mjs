// A real OpenID Connect provider for the VISA Hub tests (npm oidc-provider), Keycloak-like:
// `preferred_username`, `name` and `email` claims, short-lived opaque access tokens, refresh tokens
// for clients allowed the refresh_token grant (bound to the login session, as Keycloak's are), a
// plain login form, automatic consent (the hub is a first-party client).
//
// Why a real provider and not a mock: token expiry, refresh, PKCE and revocation are exactly the
// places where a hand-written mock agrees with our own misunderstandings.
//
// Environment (all optional except where noted):
//   PORT               port on 127.0.0.1 (required)
//   ADMIN_SECRET       bearer secret for /admin/* and the dynamic client registration (required)
//   ACCESS_TOKEN_TTL   seconds an access token lives (default 60)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (comma separated): one static client, for manual use
//   ACCOUNTS_JSON      {"login": {"password": "...", "name": "...", "email": "...", "claims": {...}}}
//
// Test hooks (Authorization: Bearer $ADMIN_SECRET):
//   POST /reg                   RFC 7591 dynamic client registration (one client per test hub)
//   POST /admin/revoke          form `account=<login>`: end that account's sessions, grants and tokens
//   POST /admin/mode            form `mode=normal|garbage|reset`: answer every OIDC request with an
//                               HTML maintenance page, or reset the connection (a provider "down")
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const adminSecret = process.env.ADMIN_SECRET;
if (!port || !adminSecret) {
  console.error('provider.mjs: PORT and ADMIN_SECRET are required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const accessTokenTTL = Number(process.env.ACCESS_TOKEN_TTL || 60);

const DEFAULT_ACCOUNTS = Object.fromEntries(
  ['alice', 'bob', 'carol', 'dave', 'erin', 'admin', 'frank', 'grace', 'henry', 'zed'].map((login) => [
    login,
    { password: `${login}-oidc`, name: login[0].toUpperCase() + login.slice(1), email: `${login}@example.org` },
  ]),
);
// an account whose userinfo lacks the username claim: the hub must say so, not crash
DEFAULT_ACCOUNTS.nameless = { password: 'nameless-oidc', name: 'No Username', email: 'nameless@example.org', claims: { preferred_username: null } };
const accounts = process.env.ACCOUNTS_JSON ? JSON.parse(process.env.ACCOUNTS_JSON) : DEFAULT_ACCOUNTS;

// -- storage: an in-memory adapter we can search, so /admin/revoke can find an account's grants --
const store = new Map(); // `${model}:${id}` -> {payload, expiresAt}
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken']);

class Adapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  live(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt && entry.expiresAt < Date.now()) { store.delete(key); return undefined; }
    return entry.payload;
  }
  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : 0 });
  }
  async find(id) { return this.live(this.key(id)); }
  async findByUid(uid) {
    for (const [key, { payload }] of store) {
      if (key.startsWith('Session:') && payload.uid === uid) return this.live(key);
    }
    return undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) { const p = this.live(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, { payload }] of store) {
      if (GRANTABLE.has(key.split(':')[0]) && payload.grantId === grantId) store.delete(key);
    }
  }
}

function revokeAccount(login) {
  let n = 0;
  for (const [key, { payload }] of store) {
    const model = key.split(':')[0];
    const owner = model === 'Session' ? payload.accountId : payload.accountId;
    if (['Session', 'Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode'].includes(model) && owner === login) {
      store.delete(key);
      n += 1;
    }
  }
  return n;
}

// -- provider --------------------------------------------------------------------------------
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' };

const staticClients = process.env.CLIENT_ID
  ? [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: (process.env.REDIRECT_URIS || '').split(',').filter(Boolean),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }]
  : [];

const provider = new Provider(issuer, {
  adapter: Adapter,
  clients: staticClients,
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  async findAccount(ctx, sub) {
    const account = accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        const claims = { sub, preferred_username: sub, name: account.name, email: account.email, email_verified: true, ...(account.claims || {}) };
        return Object.fromEntries(Object.entries(claims).filter(([, v]) => v !== null));
      },
    };
  },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    registration: { enabled: true, initialAccessToken: adminSecret },
  },
  // Keycloak issues refresh tokens without offline_access; they end with the login session
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  pkce: { required: () => false },
  ttl: {
    AccessToken: accessTokenTTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 600,
    Grant: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
    RefreshToken: 14 * 24 * 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});

// -- interaction pages: a login form; consent is automatic ------------------------------------
function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>
<style>body{font-family:sans-serif;background:#eef2f6;display:flex;justify-content:center;padding-top:8vh}
main{background:#fff;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 2px 8px #0002;min-width:22rem}
label{display:block;margin-top:1rem}input{width:100%;padding:.5rem;box-sizing:border-box}
button{margin-top:1.5rem;padding:.6rem 1.2rem;background:#1d4f91;color:#fff;border:0;border-radius:4px}
.error{color:#a00;margin-top:1rem}</style></head><body><main>${body}</main></body></html>`;
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginForm(uid, error = '') {
  return page('Facility login', `<h1>Facility login</h1><p>Test identity provider for VISA Hub.</p>
<form method="post" action="/interaction/${uid}/login" autocomplete="off">
<label>User name <input id="username" name="username" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
${error ? `<p class="error" id="login-error">${escape(error)}</p>` : ''}
<button id="sign-in" type="submit">Sign in</button></form>`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(body);
}

async function interaction(req, res, url) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (req.method === 'GET' && prompt.name === 'login') {
    return send(res, 200, loginForm(uid));
  }
  if (req.method === 'POST' && url.pathname.endsWith('/login')) {
    const form = await readForm(req);
    const login = (form.get('username') || '').trim();
    const account = accounts[login];
    if (!account || account.password !== form.get('password')) {
      return send(res, 200, loginForm(uid, 'Wrong user name or password.'));
    }
    return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, page('Error', `<p>Unexpected interaction ${escape(prompt.name)}</p>`));
}

// -- admin hooks for the tests ----------------------------------------------------------------
let mode = 'normal';

async function admin(req, res, url) {
  if (req.headers.authorization !== `Bearer ${adminSecret}`) return send(res, 401, '{"error":"unauthorized"}', 'application/json');
  const form = await readForm(req);
  if (url.pathname === '/admin/revoke') {
    const revoked = revokeAccount(form.get('account'));
    return send(res, 200, JSON.stringify({ revoked }), 'application/json');
  }
  if (url.pathname === '/admin/mode' && ['normal', 'garbage', 'reset'].includes(form.get('mode'))) {
    mode = form.get('mode');
    return send(res, 200, JSON.stringify({ mode }), 'application/json');
  }
  return send(res, 404, '{"error":"not found"}', 'application/json');
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname.startsWith('/admin/')) return await admin(req, res, url);
    if (mode === 'reset') return req.socket.destroy();
    if (mode === 'garbage') return send(res, 200, '<html><body>Down for maintenance</body></html>');
    if (url.pathname.startsWith('/interaction/')) return await interaction(req, res, url);
    return handle(req, res);
  } catch (err) {
    console.error('provider.mjs:', err);
    if (!res.headersSent) send(res, 500, page('Error', `<p>${escape(err.message)}</p>`));
  }
});
server.listen(port, '127.0.0.1', () => console.log(`oidc test provider listening on ${issuer}`));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
