// One cluster member: a gRPC channel, and unary and bidi-stream calls on it.
import * as grpc from '@grpc/grpc-js';
import type { Method } from './proto.js';

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Pings notice a blackholed connection under a watch or keepalive stream. Only while a call is active: etcd
  // allows no pings without one (PermitWithoutStream=false) and answers an idle pinger with GOAWAY too_many_pings.
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 0,
  // A catch-up watch response or a big range can exceed gRPC's 4 MiB default.
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': 16 * 1024 * 1024,
  // A member that comes back is used again within seconds, not after gRPC's default of up to 120 s.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2_000,
  // HTTP/2's default window (64 KiB per stream and per connection) lets a member send 64 KiB per round trip: at
  // 30 ms that caps a watch catching up at ~2 MB/s, slower than etcd hands out history. 8 MiB covers the
  // bandwidth-delay product of a cross-DC link; data is consumed as it arrives, so nothing waits in it.
  'grpc-node.flow_control_window': 8 * 1024 * 1024,
};

/** gRPC pings under an active call: one after `timeMs` without news, the connection given up `timeoutMs` later. */
export interface Keepalive {
  timeMs: number;
  timeoutMs: number;
}

export class Member {
  readonly client: grpc.Client;
  constructor(
    readonly origin: string,
    credentials: grpc.ChannelCredentials,
    keepalive?: Keepalive,
  ) {
    const options = keepalive ? { ...CHANNEL_OPTIONS, 'grpc.keepalive_time_ms': keepalive.timeMs, 'grpc.keepalive_timeout_ms': keepalive.timeoutMs } : CHANNEL_OPTIONS;
    // origin is scheme://host:port with the port always spelled out (URL.host would drop a default 80 or 443).
    this.client = new grpc.Client(origin.replace(/^https?:\/\//, ''), credentials, options);
  }

  unary<Res>(method: Method, request: object, metadata: grpc.Metadata, timeoutMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res as Res),
      );
    });
  }

  stream<Res>(method: Method, metadata: grpc.Metadata): grpc.ClientDuplexStream<object, Res> {
    return this.client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize as (b: Buffer) => Res, metadata);
  }
}
