// Raw connections that take a place at an IIP server's connection cap (src/iip/server.ts,
// fairPlaces.ts) and keep it: each proves itself with one packet answered (a plain request or a
// mesh hello), then sends nothing more unless its test writes on its socket.
import * as net from "node:net"
import * as tls from "node:tls"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import { MESH_ALPN } from "../../src/iip/tls.ts"
import { encodeHello, MeshPath } from "../../src/protocol/mesh.ts"
import { type Cleanup, frame, RawParser, waitFor, withTimeout } from "./iipRaw.ts"
import { helloOf } from "./meshTest.ts"

export interface Held {
  readonly socket: net.Socket
  /** Packets answered on it so far (a hello's answer counts). */
  answered: number
  closed: boolean
}

/** One connection from `localAddress` that proves itself (a plain request answered, or a mesh hello) and then stays open, sending nothing more. */
export const holdConnection = async (cleanup: Cleanup, port: number, localAddress: string, mode: "plain" | "mesh", credentials?: WorkloadCredentials): Promise<Held> => {
  const tcp = net.connect({ host: "127.0.0.1", port, localAddress })
  cleanup.add(() => tcp.destroy())
  const socket = credentials === undefined
    ? tcp
    : tls.connect({
      socket: tcp,
      key: credentials.privateKeyPem,
      cert: credentials.certificateChainPem,
      ca: credentials.trustBundlePem,
      ALPNProtocols: [MESH_ALPN],
      checkServerIdentity: () => undefined
    })
  cleanup.add(() => socket.destroy())
  const held: Held = { socket, answered: 0, closed: false }
  const parser = new RawParser()
  socket.on("error", () => {})
  socket.on("data", (chunk: Buffer) => (held.answered += parser.push(chunk).length))
  socket.once("close", () => (held.closed = true))
  await withTimeout(new Promise<void>((resolve) => socket.once(credentials === undefined ? "connect" : "secureConnect", () => resolve())), 5000, "the connection")
  socket.write(mode === "mesh" ? frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)) : frame(1, "/echo", 0, "x"))
  await waitFor(() => held.answered > 0 || held.closed, 5000, "the first packet's answer")
  if (held.closed) throw new Error(`the ${localAddress} connection was closed at accept`)
  return held
}
