// The outbound HTTP/1.1 listener alone (src/sidecar/http1Listener.ts) on 127.0.0.1 port 0, with
// the sidecar's own limits unless a test names others: what the listener's tests stand up.
import type * as net from "node:net"
import { Http1Listener, type Http1ListenerOptions } from "../../src/sidecar/http1Listener.ts"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import type { Cleanup } from "./iipRaw.ts"

/** A listener answering with `onRequest`, closed (its connections first) by `cleanup`. */
export const listenOutbound = async (
  cleanup: Cleanup,
  onRequest: (call: OutboundCall) => void,
  options: Partial<Http1ListenerOptions> = {}
): Promise<{ readonly listener: Http1Listener; readonly port: number }> => {
  const listener = new Http1Listener({
    maxHeaderSize: 16 * 1024,
    headersTimeoutMs: 60_000,
    requestTimeoutMs: 300_000,
    keepAliveTimeoutMs: 60_000,
    maxConnections: 1000,
    onRequest,
    onUpgrade: (_request, socket) => socket.destroy(),
    onH2c: (socket) => socket.destroy(),
    onStray: () => {},
    maxHeldAnswerBytes: 512 * 1024 * 1024,
    ...options
  })
  await new Promise<void>((resolve) => listener.server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => {
    listener.destroyAll()
    return new Promise<void>((resolve) => listener.server.close(() => resolve()))
  })
  return { listener, port: (listener.server.address() as net.AddressInfo).port }
}
