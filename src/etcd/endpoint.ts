// Cluster URLs: scheme://[user:pass@]host:port. Credentials are percent-decoded and kept apart from anything
// that can be printed: `origin` never contains them.
import { ConfigError } from './errors.js';

export interface Endpoint {
  /** scheme://host:port: what requests are sent to, and safe to print (never carries credentials). */
  readonly origin: string;
  readonly username: string | undefined;
  readonly password: string | undefined;
}

export function parseEndpoint(raw: string, what: string): Endpoint {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Never echo `raw`: it may carry a password.
    throw new ConfigError(`${what}: not a valid URL (expected scheme://[user:pass@]host:port)`);
  }
  const scheme = url.protocol.replace(/:$/, '');
  if (scheme !== 'http' && scheme !== 'https') throw new ConfigError(`${what}: unsupported scheme "${scheme}" (use http or https)`);
  if (!url.hostname) throw new ConfigError(`${what}: missing host`);
  // URL drops a port equal to the scheme's default, so look at the raw authority for an explicit one.
  const authority = raw.replace(/^[a-z]+:\/\//i, '').split(/[/?#]/)[0] ?? '';
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  if (!/:\d+$/.test(hostPort)) throw new ConfigError(`${what}: missing port (expected ${scheme}://host:port)`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new ConfigError(`${what}: must not have a path or query (got a path after host:port)`);
  }
  const username = url.username ? decodeUserinfo(url.username) : undefined;
  const password = url.password ? decodeUserinfo(url.password) : undefined;
  if (password !== undefined && username === undefined) throw new ConfigError(`${what}: password without a user name`);
  const port = url.port || (scheme === 'https' ? '443' : '80');
  const origin = `${scheme}://${url.hostname}:${port}`;
  return { origin, username, password };
}

/** Percent-decodes userinfo; a '%' that starts no valid escape is kept as a literal character. */
function decodeUserinfo(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
}

export interface TlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** One cluster: the client URLs of its members (requests fail over between them) and its TLS material. */
export interface Cluster {
  readonly members: readonly Endpoint[];
  /** The members' origins, comma-separated: for logs and pages (never credentials). */
  readonly origin: string;
  readonly tls?: TlsFiles;
}

/** Parses `url[,url...]`: members of one cluster. Credentials may be given on any member and apply to all. */
export function parseCluster(raw: string, what: string, tls?: TlsFiles): Cluster {
  const parts = raw.split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length === 0) throw new ConfigError(`${what}: empty URL`);
  const parsed = parts.map((p, i) => parseEndpoint(p, parts.length > 1 ? `${what} member ${i + 1}` : what));
  const withCreds = parsed.find((e) => e.username !== undefined);
  if (parsed.some((e) => e.username !== undefined && (e.username !== withCreds!.username || e.password !== withCreds!.password))) {
    throw new ConfigError(`${what}: members carry different credentials`);
  }
  const members = parsed.map((e) => ({ origin: e.origin, username: withCreds?.username, password: withCreds?.password }));
  if (new Set(members.map((m) => m.origin)).size !== members.length) throw new ConfigError(`${what}: a member is listed twice`);
  const schemes = new Set(members.map((m) => m.origin.split(':')[0]));
  if (schemes.size > 1) throw new ConfigError(`${what}: members mix http and https`);
  return { members, origin: members.map((m) => m.origin).join(','), tls };
}

/**
 * How requests to a cluster authenticate. v2 checks a password (bcrypt) on every request that carries one; v3
 * exchanges it for a token once ('token'); a client certificate's CN is the user without any password check.
 */
export type AuthKind = 'none' | 'password' | 'certificate' | 'token';

/** One timing of an authenticated cheap request against an unauthenticated one on the same member. */
export interface CostSample {
  authenticatedMs: number;
  baselineMs: number;
}
