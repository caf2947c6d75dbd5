// The iip-mesh rows of the sidecar bench: sidecar B (service "echo", --app the echo app) and sidecar
// A (service "client", --endpoint echo=B's inbound), each `node <flags> <sidecar main> sidecar ...`
// with its ready line giving its addresses; `untraced` starts both with --tracing false. Both get
// credentials (--tls-credentials-dir, written by credentials.ts), so mTLS is on, its default with
// credentials; `mtls-off` starts both with --mtls off and none; `mesh-plain` with both.
import type { Meshed, Options } from "./options.ts"
import { type NodeHop, type SidecarProcessOptions, splitHostPort, startNodeHop } from "./nodeHop.ts"
import type { ProxyPair } from "./pair.ts"
import { HOST } from "./request.ts"

export interface Sidecar extends NodeHop {
  readonly outbound: { readonly host: string; readonly port: number }
  readonly inbound: string
  readonly admin: string
}

/** Starts one sidecar (`node <flags> <sidecar main> sidecar <args>`) and waits for its ready line. */
export const startSidecar = (name: string, args: ReadonlyArray<string>, options: SidecarProcessOptions, spawned: Array<() => Promise<void>>): Promise<Sidecar> =>
  startNodeHop(`sidecar-${name}`, [options.sidecarMain, "sidecar", ...args], options, spawned, (line) =>
    line.event === "sidecar-ready" && typeof line.outbound === "string" && typeof line.inbound === "string"
      ? { outbound: splitHostPort(line.outbound), inbound: line.inbound, admin: String(line.admin) }
      : undefined)

/** A sidecar's count of completed outbound TLS handshakes, from its admin /metrics. */
const handshakesOf = async (admin: string): Promise<number> => {
  const body = await (await fetch(`http://${admin}/metrics`)).text()
  const line = body.split("\n").find((l) => l.startsWith(`iip_mesh_tls_handshakes_total{direction="outbound",result="ok"} `))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

/**
 * B in front of the app, A calling B; `untraced` adds --tracing false to both, `mtls-off` --mtls
 * off, `mesh-plain` both
 * off (and their names get the mode as a suffix). `credentials`: each service's credentials dir.
 */
export const startSidecarPair = async (
  mode: Meshed,
  appPort: number,
  options: Options,
  spawned: Array<() => Promise<void>>,
  credentials: Readonly<Record<"echo" | "client", string>>
): Promise<ProxyPair> => {
  const common = ["--outbound", `${HOST}:0`, "--inbound", `${HOST}:0`, "--admin", `${HOST}:0`, "--admin-control", `${HOST}:0`, "--drain-timeout", "2s"]
  const tracing = mode === "untraced" || mode === "mesh-plain" ? ["--tracing", "false"] : []
  const tls = (service: "echo" | "client") => (mode === "mtls-off" || mode === "mesh-plain" ? ["--mtls", "off"] : ["--tls-credentials-dir", credentials[service]])
  const suffix = mode === "meshed" ? "" : `-${mode}`
  const b = await startSidecar(`b${suffix}`, ["--service", "echo", "--app", `${HOST}:${appPort}`, ...tracing, ...tls("echo"), ...common], options, spawned)
  const a = await startSidecar(`a${suffix}`, ["--service", "client", "--endpoint", `echo=${b.inbound}`, ...tracing, ...tls("client"), ...common], options, spawned)
  return { a, b, entry: a.outbound, handshakes: () => handshakesOf(a.admin) }
}
