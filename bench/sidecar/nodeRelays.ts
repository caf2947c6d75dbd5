// The bare Node relay pairs of the sidecar bench (relay-bytes, relay-http, relay-tls: the byte
// relays with the mesh's mTLS between A and B): two processes of nodeRelay.mjs, B in front of the
// app and A in front of B, each run as a sidecar is (the same node
// flags, environment and stall probe: nodeHop.ts), so that what a path adds over a relay pair is
// the sidecar's own layers, not Node's or the process's.
import { fileURLToPath } from "node:url"
import { type NodeHop, type SidecarProcessOptions, splitHostPort, startNodeHop } from "./nodeHop.ts"
import type { Relay } from "./options.ts"
import type { ProxyPair } from "./pair.ts"
import { HOST } from "./request.ts"

const RELAY_SCRIPT = fileURLToPath(new URL("nodeRelay.mjs", import.meta.url))

/** One relay listening on a free port and forwarding to `nextPort`, once it has said so; `extra`: its TLS side. */
const startRelay = (
  kind: Relay,
  name: string,
  nextPort: number,
  extra: ReadonlyArray<string>,
  options: SidecarProcessOptions,
  spawned: Array<() => Promise<void>>
): Promise<NodeHop & { readonly entry: { host: string; port: number } }> =>
  startNodeHop(name, [RELAY_SCRIPT, kind === "relay-http" ? "http" : "bytes", `${HOST}:${nextPort}`, ...extra], options, spawned, (line) =>
    line.event === "relay-ready" && typeof line.listen === "string" ? { entry: splitHostPort(line.listen) } : undefined)

/**
 * B in front of the app, A in front of B (each stop registered in `spawned` as it starts).
 * relay-tls: B takes TLS with the echo service's credentials, A speaks it with the client's.
 */
export const startRelayPair = async (
  kind: Relay,
  appPort: number,
  options: SidecarProcessOptions,
  spawned: Array<() => Promise<void>>,
  credentials: Readonly<Record<"echo" | "client", string>>
): Promise<ProxyPair> => {
  const tls = kind === "relay-tls"
  const b = await startRelay(kind, `${kind}-b`, appPort, tls ? ["--tls-in", credentials.echo] : [], options, spawned)
  const a = await startRelay(kind, `${kind}-a`, b.entry.port, tls ? ["--tls-out", credentials.client] : [], options, spawned)
  return { a, b, entry: a.entry }
}
