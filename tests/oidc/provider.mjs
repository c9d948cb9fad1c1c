// A real OpenID provider (oidc-provider) for the integration tests, driven by
// tests/api/oidc_provider.rs. Test tooling only: nothing here runs in the service.
//
// Environment:
//   OIDC_PORT       listen on 127.0.0.1:PORT; the issuer is exactly http://127.0.0.1:PORT
//   OIDC_AUDIENCE   the `aud` of access tokens (default `gatekeeper`)
//   OIDC_RESOURCE   the resource indicator the tokens are for, defaulted so that a
//                   client need not pass `resource` (default `urn:gatekeeper:api`)
//   OIDC_CLIENTS    JSON array of {"client_id", "client_secret", "claims": {...}}; each
//                   may use the client_credentials grant (client_secret_basic unless the
//                   entry names another `token_endpoint_auth_method`, e.g.
//                   client_secret_post); `claims` go at the top level of its access tokens.
//                   An entry may instead name its `grant_types`, `response_types`,
//                   `redirect_uris` (and `post_logout_redirect_uris`, `scope`): a public
//                   authorization-code client, below
//   OIDC_TOKEN_TTL  access token lifetime in seconds (default 300)
//   OIDC_ALG        RS256 (default), ES256 or EdDSA: of the keys generated and of the tokens
//   OIDC_KEYS_FILE  the private JWKS: loaded if it exists, else one key is generated and
//                   written; rewritten after every key change
//   OIDC_ACCOUNTS   JSON object: people who sign in through the authorization-code flow,
//                   by account id (the login name and `sub`) with their claims, e.g.
//                   {"ada": {"name": "Ada", "realm_access": {"roles": ["compliance"]}},
//                    "shop": {"name": "Shop", "realm_access": {"roles": ["reseller"]},
//                             "gatekeeper": {"reseller": "acme"}}};
//                   every claim goes at the top level of the ID token as given (`name`
//                   with the `profile` scope, the others with `openid`); default {}
//
// The authorization-code flow (a browser console): a client entry such as
//   {"client_id": "console", "token_endpoint_auth_method": "none",
//    "grant_types": ["authorization_code"], "response_types": ["code"],
//    "redirect_uris": ["http://127.0.0.1:8080/console/callback"]}
// is a public client (no secret); oidc-provider requires PKCE of it, S256 only. The
// authorization request (/auth, `scope=openid profile`, `nonce`, `state`,
// `code_challenge`) redirects to our sign-in page:
//   GET  /interaction/:uid        "Test provider sign-in": one field, `login`, no password
//   POST /interaction/:uid/login  a known account signs in (back to /auth/:uid, then the
//                                 redirect_uri with `code`, `state` and `iss`); an unknown
//                                 one gets the page again (200) with the problem
// Consent is granted without asking (a first-party setup). The token endpoint exchanges
// the code (`client_id`, `redirect_uri`, `code_verifier`) for an ID token signed with
// OIDC_ALG (`aud` the client, `nonce`, the account's claims) and an opaque access token
// (not the API's: no resource). A later sign-in in the same browser rides its session
// (no form) unless `prompt=login`. RP-initiated logout: the discovery's
// end_session_endpoint (/session/end) asks, then signs out (to a registered
// `post_logout_redirect_uri`, or a page of ours). Errors are a small page of ours.
//
// Key rotation without a restart (loopback, no auth; each answers the key state
// {"signing": kid, "published": [kid, ...]}):
//   POST /admin/keys/add      a new key, published after the signing key, not signing yet
//   POST /admin/keys/promote  the newest key becomes the signing key; older ones still published
//   POST /admin/keys/retire   only the signing key stays published
//   GET  /admin/keys          the current state
// Each change builds a new Provider on the new key set and swaps the request handler,
// so no request is refused; state (the adapter's store, cookie keys) is shared by all
// instances, so a sign-in under way and the browser's session survive a rotation (not a
// restart: both are in memory).
//
// How oidc-provider picks the signing key (lib/helpers/keystore.js, 9.13.3):
// `selectForSign({alg, use: 'sig', kid})` filters the keystore (kty, crv, alg and use
// where the key names them, kid when one is asked for), then sorts by a score (+1 if the
// key has `alg`, +1 if it has `use`) with a stable sort, and the caller takes the first:
// among equally scored keys of one alg, the first in the JWKS signs. Every key here names
// `alg` and `use`, the signing key is put first, and the resource server's `jwt.sign.kid`
// names it as well (used for access tokens; ID tokens use the order).
//
// stdout carries one line, `ready http://127.0.0.1:PORT`; everything else goes to stderr
// (oidc-provider writes its notices with console.info, so that is sent to stderr too).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';

import Provider, { errors } from 'oidc-provider';

console.info = console.error;
console.log = console.error;

function fail(message) {
  console.error(`oidc test provider: ${message}`);
  process.exit(2);
}

function env(name, fallback) {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
}

const PORT = Number.parseInt(env('OIDC_PORT', ''), 10);
if (!Number.isSafeInteger(PORT) || PORT <= 0 || PORT > 65535) fail('OIDC_PORT must be a port number');
const ISSUER = `http://127.0.0.1:${PORT}`;
const AUDIENCE = env('OIDC_AUDIENCE', 'gatekeeper');
const RESOURCE = env('OIDC_RESOURCE', 'urn:gatekeeper:api');
if (!URL.canParse(RESOURCE)) fail('OIDC_RESOURCE must be an absolute URI');
const TOKEN_TTL = Number.parseInt(env('OIDC_TOKEN_TTL', '300'), 10);
if (!Number.isSafeInteger(TOKEN_TTL) || TOKEN_TTL <= 0) fail('OIDC_TOKEN_TTL must be a positive integer');
const ALG = env('OIDC_ALG', 'RS256');
const KEYS_FILE = env('OIDC_KEYS_FILE', '');
if (!KEYS_FILE) fail('OIDC_KEYS_FILE must name a file');

let CLIENTS;
try {
  CLIENTS = JSON.parse(env('OIDC_CLIENTS', '[]'));
} catch (err) {
  fail(`OIDC_CLIENTS is not JSON: ${err.message}`);
}
if (!Array.isArray(CLIENTS)) fail('OIDC_CLIENTS must be a JSON array');
for (const c of CLIENTS) {
  if (typeof c?.client_id !== 'string' || !c.client_id) fail('each OIDC_CLIENTS entry needs a client_id');
  if (c.claims !== undefined && (c.claims === null || typeof c.claims !== 'object' || Array.isArray(c.claims))) {
    fail(`the claims of client ${c.client_id} must be a JSON object`);
  }
}
const CLAIMS = new Map(CLIENTS.map((c) => [c.client_id, c.claims ?? {}]));

let ACCOUNTS;
try {
  ACCOUNTS = JSON.parse(env('OIDC_ACCOUNTS', '{}'));
} catch (err) {
  fail(`OIDC_ACCOUNTS is not JSON: ${err.message}`);
}
if (ACCOUNTS === null || typeof ACCOUNTS !== 'object' || Array.isArray(ACCOUNTS)) fail('OIDC_ACCOUNTS must be a JSON object');
for (const [id, claims] of Object.entries(ACCOUNTS)) {
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) fail(`the claims of account ${id} must be a JSON object`);
}
// Every claim name an account uses: released with `openid` (`name` with `profile`).
const ACCOUNT_CLAIMS = [...new Set(Object.values(ACCOUNTS).flatMap((c) => Object.keys(c)))].filter((n) => n !== 'sub');
const OPENID_CLAIMS = ['sub', ...ACCOUNT_CLAIMS.filter((n) => n !== 'name')];

// Keys.

const KEY_PARAMS = {
  RS256: ['rsa', { modulusLength: 2048 }],
  ES256: ['ec', { namedCurve: 'P-256' }],
  EdDSA: ['ed25519', {}],
};
if (!KEY_PARAMS[ALG]) fail(`OIDC_ALG must be one of ${Object.keys(KEY_PARAMS).join(', ')}`);

function generateKey() {
  const [type, options] = KEY_PARAMS[ALG];
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `${ALG.toLowerCase()}-${crypto.randomBytes(6).toString('base64url')}`,
    alg: ALG,
    use: 'sig',
  };
}

// The key state: `keys` in published order, the signing key first and the others
// oldest to newest; `newest` is the last key added (what `promote` makes the signing
// key). The file is this JWKS ({"keys": [...]}, usable as oidc-provider's `jwks` as it
// is) with `newest` beside `keys`.
let state;

function loadOrCreateKeys() {
  if (fs.existsSync(KEYS_FILE)) {
    const file = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));
    if (!Array.isArray(file?.keys) || file.keys.length === 0) fail(`${KEYS_FILE} holds no keys`);
    const newest = file.keys.some((k) => k.kid === file.newest) ? file.newest : file.keys.at(-1).kid;
    return { keys: file.keys, newest };
  }
  const key = generateKey();
  return { keys: [key], newest: key.kid };
}

function writeKeys(next) {
  const tmp = `${KEYS_FILE}.${process.pid}.tmp`;
  fs.mkdirSync(path.dirname(path.resolve(KEYS_FILE)), { recursive: true });
  fs.writeFileSync(tmp, `${JSON.stringify({ keys: next.keys, newest: next.newest }, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, KEYS_FILE);
}

function describe(s = state) {
  return { signing: s.keys[0].kid, published: s.keys.map((k) => k.kid) };
}

// Provider instances.

// One store for every instance (oidc-provider's default in-memory adapter makes a new
// store per instance, which a swap would lose).
const store = new Map();
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  static get(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.value;
  }

  static set(key, value, expiresIn) {
    store.set(key, {
      value,
      expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined,
    });
  }

  async upsert(id, payload, expiresIn) {
    SharedMemoryAdapter.set(this.key(id), payload, expiresIn);
    if (this.model === 'Session' && payload.uid) SharedMemoryAdapter.set(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) SharedMemoryAdapter.set(`userCode:${payload.userCode}`, id, expiresIn);
    // Only tokens and codes go with their grant (as in oidc-provider's memory adapter): an
    // Interaction names the session's grantId too, and must outlive that grant's
    // revocation at a logout (an account switch signs the old account out mid-interaction).
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = new Set(SharedMemoryAdapter.get(grantKey) ?? []).add(this.key(id));
      // Kept as long as the process (a test's): an expired member is just not there.
      SharedMemoryAdapter.set(grantKey, [...members]);
    }
  }

  async find(id) {
    return SharedMemoryAdapter.get(this.key(id));
  }

  async findByUid(uid) {
    const id = SharedMemoryAdapter.get(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = SharedMemoryAdapter.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = SharedMemoryAdapter.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of SharedMemoryAdapter.get(grantKey) ?? []) store.delete(key);
    store.delete(grantKey);
  }
}

const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

function clientMetadata(c) {
  return {
    client_id: c.client_id,
    ...(c.client_secret ? { client_secret: c.client_secret } : {}),
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    // client_credentials unless the entry says otherwise (a console's authorization code).
    grant_types: c.grant_types ?? ['client_credentials'],
    response_types: c.response_types ?? [],
    redirect_uris: c.redirect_uris ?? [],
    ...(c.post_logout_redirect_uris ? { post_logout_redirect_uris: c.post_logout_redirect_uris } : {}),
    ...(c.scope ? { scope: c.scope } : {}),
  };
}

// The grant of a sign-in (see `loadExistingGrant`): the session's grant for the client
// when it is still there and the same account's, else a new one; either way with what
// this request asks for.
async function grantRequested(ctx) {
  const { client, session, provider } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  if (grant?.accountId !== session.accountId || grant?.clientId !== client.clientId) {
    grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  }
  if (ctx.oidc.requestParamOIDCScopes.size) grant.addOIDCScope(ctx.oidc.requestParamOIDCScopes);
  if (ctx.oidc.requestParamClaims.size) grant.addOIDCClaims(ctx.oidc.requestParamClaims);
  await grant.save();
  return grant;
}

// Pages oidc-provider renders (its defaults load remote fonts): small, accessible ones.

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title></head>
<body><main><h1>${escapeHtml(title)}</h1>
${body}
</main></body></html>`;
}

// `form` is oidc-provider's `<form id="op.logoutForm" ...>` with its xsrf field.
async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = page('Test provider sign-out', `<p>Sign out of the test provider?</p>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>
<button type="submit" form="op.logoutForm">Stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page('Test provider sign-out', '<p role="status">You are signed out of the test provider.</p>');
}

// `out` is {error, error_description, ...}; the status is already set.
async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Test provider error', `<p role="alert"><code>${escapeHtml(out.error)}</code>: ${escapeHtml(out.error_description ?? '')}</p>`);
}

function configuration(s) {
  const signing = s.keys[0];
  if (signing.alg !== ALG) {
    throw new Error(`the signing key ${signing.kid} in ${KEYS_FILE} is ${signing.alg}, OIDC_ALG is ${ALG}`);
  }
  const resourceServer = {
    scope: '',
    audience: AUDIENCE,
    accessTokenTTL: TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: ALG, kid: signing.kid } },
  };
  return {
    adapter: SharedMemoryAdapter,
    clients: CLIENTS.map(clientMetadata),
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: ALG,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    cookies: { keys: COOKIE_KEYS },
    jwks: { keys: s.keys },
    claims: { openid: OPENID_CLAIMS, profile: ['name'] },
    // Every claim the scopes release goes into the ID token, not only into userinfo.
    conformIdTokenClaims: false,
    findAccount: async (_ctx, sub) => {
      if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
      return { accountId: sub, claims: async () => ({ ...structuredClone(ACCOUNTS[sub]), sub }) };
    },
    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // Consent without asking (a first-party setup): the session's grant for the client,
    // or a new one, always given the OIDC scopes and claims this request asks for, so
    // the consent prompt never stops a sign-in (also when the grant is gone, e.g.
    // revoked after an authorization code was replayed).
    loadExistingGrant: async (ctx) => grantRequested(ctx),
    features: {
      clientCredentials: { enabled: true },
      // Our own sign-in page (see `interaction` below) instead.
      devInteractions: { enabled: false },
      // RP-initiated logout (end_session_endpoint, on by default): small pages of ours,
      // without the default's remote fonts.
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // The API's resource for client-credentials tokens; none for a sign-in (its
        // access token is not the API's).
        defaultResource: async (_ctx, client, oneOf) => oneOf ?? (client.grantTypeAllowed('client_credentials') ? RESOURCE : undefined),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    renderError,
    // Merged at the top level of the JWT access token; oidc-provider's own claims
    // (iss, sub, aud, exp, iat, jti, client_id, scope) are set after these and win.
    extraTokenClaims: async (_ctx, token) => structuredClone(CLAIMS.get(token.clientId) ?? {}),
    ttl: {
      AccessToken: TOKEN_TTL,
      ClientCredentials: TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: TOKEN_TTL,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  };
}

function build(s) {
  const provider = new Provider(ISSUER, configuration(s));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  for (const event of ['grant.error', 'discovery.error', 'jwks.error', 'introspection.error', 'revocation.error', 'authorization.error']) {
    // The cause says why (e.g. `code_verifier does not match code_challenge` behind
    // invalid_grant's `grant request is invalid`).
    provider.on(event, (_ctx, err) => console.error(event, err?.message ?? err, err?.error_description ?? '', err?.cause?.message ? `(${err.cause.message})` : ''));
  }
  return provider;
}

let handler;
let current;

// Builds the provider for `next` first (a bad key set leaves the current one serving),
// then writes the file, then swaps.
function apply(next) {
  const nextProvider = build(next);
  const nextHandler = nextProvider.callback();
  writeKeys(next);
  state = next;
  current = nextProvider;
  handler = nextHandler;
}

// The sign-in page (the authorization-code flow's login prompt).

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function loginPage(res, uid, status, problem) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(page('Test provider sign-in', `${problem ? `<p role="alert">${escapeHtml(problem)}</p>\n` : ''}<form method="post" action="/interaction/${encodeURIComponent(uid)}/login">
<label for="login">Account</label> <input id="login" name="login" autocomplete="username" autofocus>
<button type="submit">Sign in</button>
</form>`));
}

function errorPage(res, status, error, description) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(page('Test provider error', `<p role="alert"><code>${escapeHtml(error)}</code>: ${escapeHtml(description ?? '')}</p>`));
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// GET /interaction/:uid (the sign-in page) and POST /interaction/:uid/login (its form),
// on whichever instance serves now: the interaction and session are in the shared
// store, signed with the shared cookie keys.
async function interaction(req, res) {
  const { pathname } = new URL(req.url, ISSUER);
  const [, , uid, action, ...rest] = pathname.split('/');
  const provider = current;
  try {
    if (rest.length || !(req.method === 'GET' && action === undefined) && !(req.method === 'POST' && action === 'login')) {
      return errorPage(res, 404, 'not_found', `no ${req.method} ${pathname}`);
    }
    // Throws SessionNotFound without the interaction's cookie or once it expired.
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) return errorPage(res, 400, 'invalid_request', 'this sign-in is not the one under way in this browser; start again');
    if (details.prompt.name === 'consent') {
      // Not reached while `loadExistingGrant` grants what is asked; granted here too.
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
      const grantId = await grant.save();
      req.resume();
      return await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    if (details.prompt.name !== 'login') return errorPage(res, 400, 'invalid_request', `no page for the ${details.prompt.name} prompt`);
    if (req.method === 'GET') return loginPage(res, uid, 200);
    const login = (await readForm(req)).get('login')?.trim() ?? '';
    if (!Object.hasOwn(ACCOUNTS, login)) {
      return loginPage(res, uid, 200, login ? `There is no account ${login}.` : 'Enter an account.');
    }
    return await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  } catch (err) {
    console.error('interaction', err?.name ?? '', err?.message ?? err, err?.error_description ?? '');
    req.resume();
    // E.g. SessionNotFound: no interaction cookie (another browser), or it expired.
    return errorPage(res, 400, err?.error ?? 'server_error', err?.error_description ?? String(err?.message ?? err));
  }
}

// Admin routes.

const admin = {
  'GET /admin/keys': () => state,
  'POST /admin/keys/add': () => {
    const key = generateKey();
    return { keys: [...state.keys, key], newest: key.kid };
  },
  'POST /admin/keys/promote': () => {
    const newest = state.keys.find((k) => k.kid === state.newest) ?? state.keys[0];
    return { keys: [newest, ...state.keys.filter((k) => k !== newest)], newest: newest.kid };
  },
  'POST /admin/keys/retire': () => ({ keys: [state.keys[0]], newest: state.keys[0].kid }),
};

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function isLoopback(address) {
  return address === '::1' || address?.startsWith('127.') || address?.startsWith('::ffff:127.');
}

function handleAdmin(req, res) {
  const { pathname } = new URL(req.url, ISSUER);
  const route = admin[`${req.method} ${pathname}`];
  if (!isLoopback(req.socket.remoteAddress)) return json(res, 403, { error: 'loopback only' });
  if (!route) return json(res, 404, { error: 'no such admin route' });
  req.resume();
  try {
    const next = route();
    if (next !== state) apply(next);
    return json(res, 200, describe());
  } catch (err) {
    console.error(`${req.method} ${pathname}`, err);
    return json(res, 500, { error: String(err?.message ?? err) });
  }
}

// Start.

try {
  const initial = loadOrCreateKeys();
  apply(initial);
} catch (err) {
  fail(err?.stack ?? String(err));
}

const server = http.createServer((req, res) => {
  if (req.url === '/admin' || req.url.startsWith('/admin/')) return handleAdmin(req, res);
  if (req.url.startsWith('/interaction/')) return interaction(req, res);
  return handler(req, res);
});
server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`));
server.listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`ready ${ISSUER}\n`);
});

function shutdown(signal) {
  console.error(`oidc test provider: ${signal}, stopping`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
