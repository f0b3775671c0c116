// Test helpers for etcd's v3 API: turning on v3 auth with etcdctl (independent of the client under test).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

async function etcdctl(clientUrl: string, args: string[]): Promise<void> {
  try {
    await run('etcdctl', ['--endpoints', clientUrl, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  } catch (err) {
    // Name the subcommand only: the arguments carry passwords.
    throw new Error(`etcdctl ${args[0]} ${args[1] ?? ''} failed: ${(err as { stderr?: string }).stderr?.trim() ?? String(err)}`);
  }
}

export interface V3User {
  user: string;
  password: string;
  /** The user may read and write every key starting with this prefix (role `<user>-rw`). */
  prefix: string;
}

/** Root user with the root role, one read-write role per user on its prefix, the users, then `auth enable`. */
export async function enableV3Auth(clientUrl: string, opts: { rootPassword: string; users?: V3User[] }): Promise<void> {
  const addUser = (name: string, password: string) => etcdctl(clientUrl, ['user', 'add', name, '--interactive=false', '--new-user-password', password]);
  await addUser('root', opts.rootPassword);
  await etcdctl(clientUrl, ['user', 'grant-role', 'root', 'root']);
  for (const u of opts.users ?? []) {
    const role = `${u.user}-rw`;
    await etcdctl(clientUrl, ['role', 'add', role]);
    await etcdctl(clientUrl, ['role', 'grant-permission', role, '--prefix=true', 'readwrite', u.prefix]);
    await addUser(u.user, u.password);
    await etcdctl(clientUrl, ['user', 'grant-role', u.user, role]);
  }
  await etcdctl(clientUrl, ['auth', 'enable']);
}
