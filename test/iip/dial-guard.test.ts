// An IIP client told to dial only peers (`peersOnly`, src/iip/dialGuard.ts: how the sidecar dials an
// endpoint learned from another host) never connects to this host's loopback, whether the host it is
// given is an IP literal, an IPv4-mapped one or a name that resolves there ("localhost", resolved by
// the system as any name an attacker's DNS points at 127.0.0.1 would be), over TCP, TLS or WebSocket:
// a listener on 127.0.0.1 sees no connection, the request ends with ConnectFailed `notPeer`. Without
// the option the same client reaches the same server (what a static endpoint does). Told of its
// process's own listeners (`notSelf`, src/iip/ownListeners.ts), it never connects to one of them in
// any of those forms, whatever the endpoint's source, and still reaches another server on the same
// address at another port (a second sidecar on this host).
import { createSecureContext } from "node:tls"
import { afterEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import type { ClientOptions } from "../../src/iip/clientOptions.ts"
import { isNotPeerAddress } from "../../src/iip/dialGuard.ts"
import { OwnListeners } from "../../src/iip/ownListeners.ts"
import { IipServer } from "../../src/iip/server.ts"
import { ConnectFailed } from "../../src/mux/errors.ts"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup } from "../support/iipRaw.ts"

describe("dialling only peers", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const client = (options: ClientOptions) => {
    const c = new IipClient({ log: () => {}, waitForReconnect: false, connectTimeoutMs: 5000, ...options })
    cleanup.add(() => c.close())
    return c
  }

  const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error)

  it.each([
    ["an IPv4 loopback literal", "127.0.0.1", {}],
    ["another address of 127/8", "127.3.4.5", {}],
    ["an IPv4-mapped loopback", "::ffff:127.0.0.1", {}],
    ["a name that resolves to loopback", "localhost", {}],
    ["a name that resolves to loopback, over TLS", "localhost", { tls: { secureContext: () => createSecureContext() } }],
    ["a name that resolves to loopback, over WebSocket", "localhost", { transport: "websocket" as const }],
    // getaddrinfo reads these as 127.0.0.1 (inet_aton); the WebSocket URL parser rewrites them to it, a literal then dialled with no lookup.
    ["a short IPv4 loopback form (127.1)", "127.1", {}],
    ["a short IPv4 loopback form (127.1), over WebSocket", "127.1", { transport: "websocket" as const }],
    ["a loopback as one number (2130706433), over WebSocket", "2130706433", { transport: "websocket" as const }],
    ["a hex loopback (0x7f000001), over WebSocket", "0x7f000001", { transport: "websocket" as const }],
    ["a loopback with a trailing dot (127.0.0.1.), over WebSocket", "127.0.0.1.", { transport: "websocket" as const }]
  ])("refuses %s: the listener sees no connection", async (_name, host, extra) => {
    const listener = await countingListener(cleanup)
    const error = await failure(client({ host, port: listener.port, peersOnly: true, ...extra }).call("/echo", "x"))
    expect(error).toBeInstanceOf(ConnectFailed)
    expect((error as ConnectFailed).notPeer).toBe(true)
    expect((error as ConnectFailed).message).toContain("on this host")
    expect(listener.connections()).toBe(0)
  })

  it("reaches the same server by the same name without peersOnly (an endpoint from this host or the operator)", async () => {
    const server = new IipServer({ port: 0, log: () => {} })
    server.handle("/echo", (request) => request.data)
    await server.listen()
    cleanup.add(() => server.close())
    const answer = await client({ host: "localhost", port: server.address.port, mesh: false }).call("/echo", "hello")
    expect(answer.toString()).toBe("hello")
  })

  it("tells peers' addresses from this host's and the metadata service's", () => {
    for (const address of ["127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "::1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:0:0:1", "::1%lo", "224.0.0.251", "239.1.2.3", "255.255.255.255", "ff02::fb", "169.254.169.254", "fd00:ec2::254"]) {
      expect(isNotPeerAddress(address), address).toBe(true)
    }
    // Zeroconf peers live in 169.254/16 on a link without DHCP; private and public addresses are peers'.
    for (const address of ["10.77.0.2", "192.168.1.20", "169.254.10.20", "172.16.0.1", "8.8.8.8", "fe80::1", "2001:db8::1", "::ffff:10.0.0.1"]) {
      expect(isNotPeerAddress(address), address).toBe(false)
    }
  })

  it.each([
    ["its bound address", "127.0.0.1", {}],
    ["an IPv4-mapped form", "::ffff:127.0.0.1", {}],
    ["a name that resolves there", "localhost", {}],
    ["a name that resolves there, over TLS", "localhost", { tls: { secureContext: () => createSecureContext() } }],
    ["a name that resolves there, over WebSocket", "localhost", { transport: "websocket" as const }],
    ["a short form the WebSocket URL parser rewrites (127.1)", "127.1", { transport: "websocket" as const }]
  ])("with its process's listeners (notSelf), refuses %s: the listener sees no connection", async (_name, host, extra) => {
    const listener = await countingListener(cleanup)
    const own = new OwnListeners()
    own.add({ host: "127.0.0.1", port: listener.port })
    const error = await failure(client({ host, port: listener.port, notSelf: own.all, ...extra }).call("/echo", "x"))
    expect(error).toBeInstanceOf(ConnectFailed)
    expect(error).toMatchObject({ notPeer: true, ownListener: true })
    expect((error as ConnectFailed).message).toContain("this process itself listens there")
    expect(listener.connections()).toBe(0)
  })

  it("with its process's listeners (notSelf), reaches another server on the same address at another port (a second sidecar on this host)", async () => {
    const listener = await countingListener(cleanup)
    const own = new OwnListeners()
    own.add({ host: "0.0.0.0", port: listener.port })
    const server = new IipServer({ port: 0, log: () => {} })
    server.handle("/echo", (request) => request.data)
    await server.listen()
    cleanup.add(() => server.close())
    const answer = await client({ host: "localhost", port: server.address.port, mesh: false, notSelf: own.all }).call("/echo", "hello")
    expect(answer.toString()).toBe("hello")
  })
})
