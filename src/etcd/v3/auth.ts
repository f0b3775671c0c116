// Password authentication on v3: the password is exchanged for a token once (the server's bcrypt check), and the
// token rides on every call as metadata until it is old or refused. Credentials never appear in an error or log.
import * as grpc from '@grpc/grpc-js';
import { V3RequestError } from './errors.js';

/** Simple tokens expire 300 s after their last use by default; a fresh one well before that. */
const TOKEN_MAX_AGE_MS = 240_000;

/** `value` undefined: the cluster has auth disabled. `at`: performance.now() when it was requested. */
interface Token {
  value: string | undefined;
  at: number;
}

export class TokenAuth {
  #token: Token | undefined;
  #authenticating: Promise<Token> | undefined;
  #exchangeMs: number | null = null;

  constructor(
    readonly credentials: { username: string; password: string } | undefined,
    /** One anonymous Authenticate call: the token. */
    private readonly exchange: (username: string, password: string) => Promise<string>,
  ) {}

  /** How long the last password → token exchange took, ms; null before one. */
  get exchangeMs(): number | null {
    return this.#exchangeMs;
  }

  /** Metadata for a call: the current token, fetched first when there is none or it is old. */
  async metadata(): Promise<grpc.Metadata> {
    const metadata = new grpc.Metadata();
    if (!this.credentials) return metadata;
    if (!this.#token || performance.now() - this.#token.at >= TOKEN_MAX_AGE_MS) {
      this.#authenticating ??= this.#authenticate().finally(() => (this.#authenticating = undefined));
      this.#token = await this.#authenticating;
    }
    if (this.#token.value !== undefined) metadata.set('token', this.#token.value);
    return metadata;
  }

  /** Forgets the token this metadata carried, so that the next call authenticates again. */
  drop(metadata: grpc.Metadata): void {
    // Only the token that failed: a concurrent call may have fetched a new one meanwhile.
    if (this.#token && this.#token.value === metadata.get('token')[0]) this.#token = undefined;
  }

  async #authenticate(): Promise<Token> {
    const { username, password } = this.credentials!;
    const at = performance.now(); // monotonic: a wall-clock step must not keep an old token alive
    try {
      const value = await this.exchange(username, password);
      this.#exchangeMs = performance.now() - at;
      return { value, at };
    } catch (err) {
      // Credentials for a cluster without auth are not an error (etcd's Go client does the same); checked again later.
      if (err instanceof V3RequestError && err.grpcCode === grpc.status.FAILED_PRECONDITION && err.message.includes('authentication is not enabled')) {
        return { value: undefined, at };
      }
      throw err;
    }
  }
}
