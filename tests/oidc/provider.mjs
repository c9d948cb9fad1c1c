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
//                   client_secret_post); `claims` go at the top level of its access tokens
//   OIDC_TOKEN_TTL  access token lifetime in seconds (default 300)
//   OIDC_ALG        RS256 (default), ES256 or EdDSA: of the keys generated and of the tokens
//   OIDC_KEYS_FILE  the private JWKS: loaded if it exists, else one key is generated and
//                   written; rewritten after every key change
//
// Key rotation without a restart (loopback, no auth; each answers the key state
// {"signing": kid, "published": [kid, ...]}):
//   POST /admin/keys/add      a new key, published after the signing key, not signing yet
//   POST /admin/keys/promote  the newest key becomes the signing key; older ones still published
//   POST /admin/keys/retire   only the signing key stays published
//   GET  /admin/keys          the current state
// Each change builds a new Provider on the new key set and swaps the request handler,
// so no request is refused; state (the adapter's store, cookie keys) is shared by all
// instances, so sessions of a later authorization-code flow would survive a rotation.
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
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = SharedMemoryAdapter.get(grantKey) ?? [];
      members.push(this.key(id));
      SharedMemoryAdapter.set(grantKey, members, expiresIn);
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
    client_secret: c.client_secret,
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    // client_credentials only for now; an authorization-code + PKCE client (a browser
    // console) would add its grant_types, response_types and redirect_uris here.
    grant_types: c.grant_types ?? ['client_credentials'],
    response_types: c.response_types ?? [],
    redirect_uris: c.redirect_uris ?? [],
    ...(c.post_logout_redirect_uris ? { post_logout_redirect_uris: c.post_logout_redirect_uris } : {}),
    ...(c.scope ? { scope: c.scope } : {}),
  };
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
    features: {
      clientCredentials: { enabled: true },
      // Not used (no authorization-code flow yet); a browser-console flow would turn
      // this off for interactions of its own (interactions.url) and add findAccount.
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          return resourceServer;
        },
      },
    },
    // Merged at the top level of the JWT access token; oidc-provider's own claims
    // (iss, sub, aud, exp, iat, jti, client_id, scope) are set after these and win.
    extraTokenClaims: async (_ctx, token) => structuredClone(CLAIMS.get(token.clientId) ?? {}),
    ttl: {
      AccessToken: TOKEN_TTL,
      ClientCredentials: TOKEN_TTL,
    },
  };
}

function build(s) {
  const provider = new Provider(ISSUER, configuration(s));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  for (const event of ['grant.error', 'discovery.error', 'jwks.error', 'introspection.error', 'revocation.error', 'authorization.error']) {
    provider.on(event, (_ctx, err) => console.error(event, err?.message ?? err, err?.error_description ?? ''));
  }
  return provider.callback();
}

let handler;

// Builds the provider for `next` first (a bad key set leaves the current one serving),
// then writes the file, then swaps.
function apply(next) {
  const nextHandler = build(next);
  writeKeys(next);
  state = next;
  handler = nextHandler;
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
