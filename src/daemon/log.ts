// The root logger: JSON lines on stdout. Endpoints are logged by origin only (no userinfo), and the redact
// list is a second line of defence for anything that might carry a credential.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(opts: { debug?: boolean; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      name: 'etcd-mirror',
      level: opts.debug ? 'debug' : 'info',
      redact: {
        paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization'],
        censor: '[redacted]',
      },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
