// A's h2c listener (src/sidecar/outboundH2.ts) alone on a loopback port, with node's HTTP/2 client
// session to it (or the port alone, for a raw caller): for the tests of what the listener does with
// one call's head, body and answer.
import * as http2 from "node:http2"
import * as net from "node:net"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { type H2Listener, type H2Options, makeH2c } from "../../src/sidecar/outboundH2.ts"
import type { Cleanup } from "../support/iipRaw.ts"

/** `handler` gets each stream; 10 s idle and answer idle timeouts unless `options` say otherwise. It goes with `cleanup`. */
export const h2cListening = async (cleanup: Cleanup, handler: (call: OutboundCall) => void, options: Partial<H2Options> = {}): Promise<{ h2: H2Listener; port: number }> => {
  const h2 = makeH2c(handler, { idleTimeoutMs: 10_000, maxStreams: 16, answerIdleMs: 10_000, onStalled: () => {}, onEnded: () => {}, ...options })
  cleanup.add(() => h2.destroyAll())
  const server = net.createServer((socket) => h2.accept(socket))
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { h2, port: (server.address() as net.AddressInfo).port }
}

/** h2cListening and node's client session to it. Both ends go with `cleanup`. */
export const h2cWithClient = async (cleanup: Cleanup, handler: (call: OutboundCall) => void, options: Partial<H2Options> = {}): Promise<{ h2: H2Listener; session: http2.ClientHttp2Session }> => {
  const { h2, port } = await h2cListening(cleanup, handler, options)
  const session = http2.connect(`http://127.0.0.1:${port}`)
  cleanup.add(() => session.destroy())
  session.on("error", () => {})
  return { h2, session }
}
