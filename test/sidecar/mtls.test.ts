// Mutual TLS between sidecars (issue 15): two sidecars with credentials agree on mTLS and carry
// requests; a peer with a certificate from another CA, an expired one, one for another identity
// than discovery promised, or none is refused before any request reaches the app, and the calling
// app sees why in x-iip-mesh-error (the callee held out of A's picks as refused, not ejected); a leaf renewed and a root rotated (two-root bundle) under a
// steady 200 req/s load lose no request; permissive mode takes a plain peer and counts it; plain IIP
// servers (the reference, plain or in its TLS mode) stay reachable per endpoint.
import { X509Certificate } from "node:crypto"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { createRootCa } from "../../src/identity/certificates.ts"
import { makeCredentialHolder, type WorkloadCredentials } from "../../src/identity/credentials.ts"
import { IipServer } from "../../src/iip/server.ts"
import { MESH_ALPN } from "../../src/iip/tls.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { expiredCredentials, ipServerCertificate, makeTestPki, type TestPki } from "../support/testPki.ts"

const STORE = "spiffe://iip-mesh.local/svc/store"
const CATALOG = "spiffe://iip-mesh.local/svc/catalog"
const day = 86_400_000

let pki: TestPki
let foreign: TestPki
beforeAll(async () => {
  pki = await makeTestPki("mesh")
  foreign = await makeTestPki("foreign")
})

const ok: http.RequestListener = (_req, res) => res.end("ok")

/** The value of one series of a sidecar's metrics (0 when absent). */
const metric = async (running: RunningSidecar, series: string): Promise<number> => {
  const { body } = await running.sidecar.telemetry.metrics.text()
  const line = body.split("\n").find((l) => l.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}

describe("mTLS between sidecars", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** app <- B ("catalog", `bCredentials`) <- A ("store", `aCredentials`), A told B is `expected`. */
  const mesh = async (options: {
    readonly a?: WorkloadCredentials | undefined
    readonly b?: WorkloadCredentials | undefined
    readonly expected?: string
    readonly aConfig?: Partial<SidecarConfig>
    readonly bConfig?: Partial<SidecarConfig>
    readonly log?: Array<{ event: string; fields: Record<string, unknown> }>
  }) => {
    const app = await startApp(cleanup, ok)
    const log = (event: string, fields: Record<string, unknown>) => void options.log?.push({ event, fields })
    const bHolder = options.b === undefined ? undefined : makeCredentialHolder(options.b)
    const aHolder = options.a === undefined ? undefined : makeCredentialHolder(options.a)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, ...options.bConfig }), log, bHolder === undefined ? {} : { credentials: bHolder })
    const endpoint = { address: b.inboundAddress, weight: 1, ...(options.expected === undefined ? {} : { identity: options.expected }) }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [endpoint] }, ...options.aConfig }), log, aHolder === undefined ? {} : { credentials: aHolder })
    return { app, a, b, aHolder: aHolder!, bHolder: bHolder! }
  }

  it("two sidecars with credentials agree on mTLS (TLS 1.3, ALPN iip-mesh/1) and carry requests", async () => {
    const log: Array<{ event: string; fields: Record<string, unknown> }> = []
    const { app, a, b } = await mesh({ a: await pki.credentials(STORE), b: await pki.credentials(CATALOG), expected: CATALOG, log })
    for (let i = 0; i < 3; i++) {
      const answer = await call(a.outboundPort, { path: `/item/${i}` })
      expect(answer.status).toBe(200)
      expect(String(answer.body)).toBe("ok")
    }
    expect(app.seen.length).toBe(3)
    expect(await metric(a, `iip_mesh_tls_handshakes_total{direction="outbound",result="ok"}`)).toBe(1)
    expect(await metric(b, `iip_mesh_tls_handshakes_total{direction="inbound",result="ok"}`)).toBe(1)
    expect(log.filter((l) => l.event === "mtls").map((l) => l.fields)).toStrictEqual([
      { mode: "on", identity: CATALOG },
      { mode: "on", identity: STORE }
    ])
    // What B's inbound listener presents to a new connection.
    const store = await pki.credentials(STORE)
    const socket = tls.connect({ host: "127.0.0.1", port: b.sidecar.inbound.port, key: store.privateKeyPem, cert: store.certificateChainPem, ca: store.trustBundlePem, ALPNProtocols: [MESH_ALPN], checkServerIdentity: () => undefined })
    cleanup.add(() => socket.destroy())
    await withTimeout(new Promise((resolve) => socket.once("secureConnect", resolve)), 5000, "handshake")
    expect([socket.getProtocol(), socket.alpnProtocol]).toStrictEqual(["TLSv1.3", MESH_ALPN])
  })

  it("mesh connections run TLS_AES_128_GCM_SHA256: B picks it over a client's AES-256-first order, A offers it first", async () => {
    const { a, b } = await mesh({ a: await pki.credentials(STORE), b: await pki.credentials(CATALOG), expected: CATALOG })
    // A client in OpenSSL's default order (AES-256-GCM first) to B's inbound listener.
    const store = await pki.credentials(STORE)
    const socket = tls.connect({ host: "127.0.0.1", port: b.sidecar.inbound.port, key: store.privateKeyPem, cert: store.certificateChainPem, ca: store.trustBundlePem, ALPNProtocols: [MESH_ALPN], checkServerIdentity: () => undefined })
    cleanup.add(() => socket.destroy())
    await withTimeout(new Promise((resolve) => socket.once("secureConnect", resolve)), 5000, "handshake")
    expect(socket.getCipher().name).toBe("TLS_AES_128_GCM_SHA256")
    // A's dial to a server that takes the client's order (honorCipherOrder false), presenting CATALOG.
    const catalog = await pki.credentials(CATALOG)
    const chosen: Array<string> = []
    const server = tls.createServer({ key: catalog.privateKeyPem, cert: catalog.certificateChainPem, ca: catalog.trustBundlePem, requestCert: true, rejectUnauthorized: false, honorCipherOrder: false, ALPNProtocols: [MESH_ALPN] }, (peer) => {
      chosen.push(peer.getCipher().name)
      peer.destroy()
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const port = (server.address() as { port: number }).port
    const a2 = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: `127.0.0.1:${port}`, weight: 1, identity: CATALOG }] } }), () => {}, { credentials: makeCredentialHolder(store) })
    // The server closes each connection at once: A's caller gets an error answer, not the app's.
    await call(a2.outboundPort, { timeoutMs: 5000 }).catch(() => undefined)
    await waitFor(() => chosen.length > 0, 5000, "A's handshake")
    expect(chosen[0]).toBe("TLS_AES_128_GCM_SHA256")
    expect((await call(a.outboundPort)).status).toBe(200)
  })

  it("without credentials mTLS is off and the log says so", async () => {
    const log: Array<{ event: string; fields: Record<string, unknown> }> = []
    const { a } = await mesh({ log })
    expect((await call(a.outboundPort)).status).toBe(200)
    expect(log.filter((l) => l.event === "mtls-off").length).toBe(2)
  })

  it("the trust bundle's roots are counted by state at each scrape, and the identity's end is the first expiry of its chain and root; a renewal updates both", async () => {
    const retired = await createRootCa({ commonName: "retired root", notBefore: new Date(Date.now() - 2 * day), lifetimeMs: day })
    const first = await pki.credentials(CATALOG, { bundle: retired.certificatePem + pki.root.certificatePem })
    const { b, bHolder } = await mesh({ b: first })
    const roots = (state: string) => metric(b, `iip_mesh_trust_bundle_roots{state="${state}"}`)
    expect([await roots("valid"), await roots("expired"), await roots("not_yet_valid")]).toStrictEqual([1, 1, 0])
    // The leaf (a day) ends first here: root 10 days, intermediate 5.
    expect(await metric(b, "iip_mesh_identity_expiry_timestamp_seconds")).toBe(first.notAfter.getTime() / 1000)
    const next = await pki.credentials(CATALOG, { lifetimeMs: 2 * day })
    bHolder.update(next)
    expect([await roots("valid"), await roots("expired")]).toStrictEqual([1, 0])
    expect(await metric(b, "iip_mesh_identity_expiry_timestamp_seconds")).toBe(next.notAfter.getTime() / 1000)
  })

  it("a callee with a foreign CA, an expired leaf or another identity than discovery promised is refused before its app sees anything", async () => {
    for (const [bad, reason] of [
      [await foreign.credentials(CATALOG, { bundle: pki.root.certificatePem }), "peer_untrusted"],
      [await expiredCredentials(pki, CATALOG), "peer_expired"],
      [await pki.credentials("spiffe://iip-mesh.local/svc/impostor"), "peer_identity"]
    ] as const) {
      const log: Array<{ event: string; fields: Record<string, unknown> }> = []
      const { app, a } = await mesh({ a: await pki.credentials(STORE), b: bad, expected: CATALOG, log })
      const answer = await call(a.outboundPort)
      expect(answer.status).toBe(502)
      expect(answer.headers["x-iip-mesh-error"]).toBe(`outbound; reason=${reason}`)
      expect(app.seen).toStrictEqual([])
      expect(await metric(a, `iip_mesh_tls_handshakes_total{direction="outbound",result="${reason}"}`)).toBeGreaterThan(0)
      const refused = log.find((l) => l.event === "mtls-refused")!.fields
      expect(refused).toMatchObject({ direction: "outbound", reason, local: STORE, expected: CATALOG })
      expect(refused.peer).toBe(bad.spiffeId)
      // A refused handshake is a connection not made: the endpoint held out (redialled), not failed nor ejected, and counted.
      expect(a.sidecar.registry.view()[0]!.endpoints[0]).toMatchObject({ health: "refused", failures: 0, ejections: 0 })
      expect(await metric(a, `iip_mesh_endpoint_refusals_total{service="catalog",endpoint="${a.sidecar.registry.view()[0]!.endpoints[0]!.address}"}`)).toBeGreaterThan(0)
    }
  })

  it("a caller with a foreign CA, an expired leaf or no certificate (a plain peer) is refused before the app sees anything", async () => {
    for (const [bad, why] of [
      [await foreign.credentials(STORE, { bundle: pki.root.certificatePem }), "peer_untrusted"],
      [await expiredCredentials(pki, STORE), "peer_expired"],
      [undefined, "plain_refused"]
    ] as const) {
      const log: Array<{ event: string; fields: Record<string, unknown> }> = []
      const { app, a, b } = await mesh({ a: bad, b: await pki.credentials(CATALOG), expected: CATALOG, log })
      const answer = await call(a.outboundPort)
      expect(answer.status).toBe(502)
      expect(answer.headers["x-iip-mesh-error"]).toBe("inbound; reason=tls_refused")
      expect(JSON.parse(String(answer.body)).message).toContain(`peer refused the connection: ${why}`)
      expect(app.seen).toStrictEqual([])
      expect(await metric(b, `iip_mesh_tls_handshakes_total{direction="inbound",result="${why}"}`)).toBeGreaterThan(0)
      const refused = log.find((l) => l.event === "mtls-refused" && l.fields.direction === "inbound")!.fields
      expect(refused).toMatchObject({ reason: why, local: CATALOG, peer: bad === undefined ? "none" : STORE })
    }
  })

  it("permissive mode takes a plain peer and counts it, and still speaks mTLS with a peer that has credentials", async () => {
    const { a, b, app } = await mesh({ b: await pki.credentials(CATALOG), bConfig: { mtls: "permissive" } })
    expect((await call(a.outboundPort)).status).toBe(200)
    expect(await metric(b, `iip_mesh_plain_connections_total{result="accepted"}`)).toBe(1)
    const secure = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", node: "secure-store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] } }),
      undefined,
      { credentials: makeCredentialHolder(await pki.credentials(STORE)) }
    )
    expect((await call(secure.outboundPort)).status).toBe(200)
    expect(await metric(b, `iip_mesh_tls_handshakes_total{direction="inbound",result="ok"}`)).toBe(1)
    expect(app.seen.length).toBe(2)
  })
})

/**
 * A steady load of `rate` requests per second through `port` until `stop` resolves; each request
 * is one keep-alive GET. Resolves with the statuses (and errors) of all of them once all ended.
 */
const steadyLoad = (port: number, rate: number, stop: Promise<void>, onAnswer: (count: number) => void) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
  const results: Array<Promise<number | string>> = []
  let answered = 0
  const timer = setInterval(() => {
    results.push(
      call(port, { path: "/load", agent, timeoutMs: 10_000 }).then(
        (answer) => answer.status,
        (error: unknown) => String(error)
      ).finally(() => onAnswer(++answered))
    )
  }, 1000 / rate)
  return stop.then(async () => {
    clearInterval(timer)
    const statuses = await Promise.all(results)
    agent.destroy()
    return statuses
  })
}

describe("credentials change under load", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** Counts the load's answers; `after(n)` resolves once n have come back (at once if they have). */
  const answerCounter = () => {
    let answered = 0
    const waiting: Array<{ count: number; resolve: () => void }> = []
    return {
      onAnswer: (n: number) => {
        answered = n
        for (const waiter of waiting.filter((w) => w.count <= n)) {
          waiting.splice(waiting.indexOf(waiter), 1)
          waiter.resolve()
        }
      },
      after: (count: number) => new Promise<void>((resolve) => (answered >= count ? resolve() : waiting.push({ count, resolve })))
    }
  }

  const start = async (store: WorkloadCredentials, catalog: WorkloadCredentials) => {
    const app = await startApp(cleanup, ok)
    const bHolder = makeCredentialHolder(catalog)
    const aHolder = makeCredentialHolder(store)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), undefined, { credentials: bHolder })
    const endpoints = { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints }), undefined, { credentials: aHolder })
    /** A caller started now: its connection is a new handshake with B's current credentials. */
    const freshCaller = async (credentials: WorkloadCredentials) => {
      const caller = await startSidecar(cleanup, sidecarConfig({ service: "store", node: `fresh-${Math.random()}`, endpoints }), undefined, { credentials: makeCredentialHolder(credentials) })
      const answer = await call(caller.outboundPort)
      await caller.stop()
      return answer.status
    }
    return { app, a, b, aHolder, bHolder, freshCaller }
  }

  it("a leaf renewed under a steady 200 req/s load loses no request; new connections use the new leaf", async () => {
    const { a, b, aHolder, bHolder, freshCaller } = await start(await pki.credentials(STORE), await pki.credentials(CATALOG))
    const counter = answerCounter()
    const done = counter.after(400)
    const renewed = counter.after(150).then(async () => {
      const catalog = await pki.credentials(CATALOG)
      bHolder.update(catalog)
      aHolder.update(await pki.credentials(STORE))
      return catalog
    })
    const statuses = await withTimeout(steadyLoad(a.outboundPort, 200, done, (n) => counter.onAnswer(n)), 20_000, "the load")
    expect(statuses.length).toBeGreaterThanOrEqual(400)
    expect(statuses.filter((s) => s !== 200)).toStrictEqual([])
    // B presents the renewed leaf to a new connection.
    const catalog = await renewed
    const store = aHolder.current()
    const socket = tls.connect({ host: "127.0.0.1", port: b.sidecar.inbound.port, key: store.privateKeyPem, cert: store.certificateChainPem, ca: store.trustBundlePem, ALPNProtocols: [MESH_ALPN], checkServerIdentity: () => undefined })
    cleanup.add(() => socket.destroy())
    await withTimeout(new Promise((resolve) => socket.once("secureConnect", resolve)), 5000, "handshake")
    expect(socket.getPeerX509Certificate()!.serialNumber).toBe(new X509Certificate(catalog.certificateChainPem).serialNumber)
    expect(await freshCaller(store)).toBe(200)
    // A's connection from before the renewal carried the whole load; the next one A dials presents A's new leaf.
    const client = a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("catalog")[0]!)
    const before = client.meshSessions[0]!.connection.socket as tls.TLSSocket
    expect(before.getX509Certificate()!.serialNumber).not.toBe(new X509Certificate(store.certificateChainPem).serialNumber)
    before.end()
    await waitFor(() => client.meshSessions.every((session) => session.connection.socket !== before), 5000, "the old connection closed")
    expect((await call(a.outboundPort)).status).toBe(200)
    const after = client.meshSessions[0]!.connection.socket as tls.TLSSocket
    expect(after.getX509Certificate()!.serialNumber).toBe(new X509Certificate(store.certificateChainPem).serialNumber)
  })

  it("a root rotated with a two-root bundle under a steady 200 req/s load loses no request", async () => {
    const next = await makeTestPki("next")
    const both = pki.root.certificatePem + next.root.certificatePem
    const { a, aHolder, bHolder, freshCaller } = await start(await pki.credentials(STORE), await pki.credentials(CATALOG))
    const counter = answerCounter()
    const done = counter.after(500)
    const fresh: Array<number> = []
    // 1: both roots trusted everywhere; 2: B on a leaf of the new root; 3: A too; 4: the old root dropped.
    const steps = [
      async () => {
        bHolder.update({ ...bHolder.current(), trustBundlePem: both })
        aHolder.update({ ...aHolder.current(), trustBundlePem: both })
      },
      async () => bHolder.update(await next.credentials(CATALOG, { bundle: both })),
      async () => aHolder.update(await next.credentials(STORE, { bundle: both })),
      async () => {
        bHolder.update({ ...bHolder.current(), trustBundlePem: next.root.certificatePem })
        aHolder.update({ ...aHolder.current(), trustBundlePem: next.root.certificatePem })
      }
    ]
    // One step after another, each once another 80 answers came back under the step before.
    const rotated = (async () => {
      for (const [i, step] of steps.entries()) {
        await counter.after(80 * (i + 1))
        await step()
        fresh.push(await freshCaller(aHolder.current()))
      }
    })()
    const statuses = await withTimeout(steadyLoad(a.outboundPort, 200, done, (n) => counter.onAnswer(n)), 30_000, "the load")
    await rotated
    expect(statuses.filter((s) => s !== 200)).toStrictEqual([])
    expect(fresh).toStrictEqual([200, 200, 200, 200])
  })
})

describe("plain IIP endpoints next to mTLS", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a sidecar with mTLS on reaches a plain IIP server in the reference's TLS mode (security=tls, verified with ca=) and a plain one (security=plain)", async () => {
    const reference = await ipServerCertificate(pki, "127.0.0.1")
    const tlsServer = new IipServer({ port: 0, mesh: false, log: () => {}, tls: { credentials: reference, requireClientCertificate: false, minVersion: "TLSv1.2" } })
    const plainServer = new IipServer({ port: 0, mesh: false, log: () => {} })
    for (const [server, name] of [[tlsServer, "tls"], [plainServer, "plain"]] as const) {
      server.handlePrefix("/", () => `from ${name}`)
      await server.listen()
      cleanup.add(() => server.close())
    }
    const dir = mkdtempSync(join(tmpdir(), "mtls-ca-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const ca = join(dir, "ca.pem")
    writeFileSync(ca, pki.root.certificatePem)
    const caller = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        endpoints: {
          secured: [{ address: `127.0.0.1:${tlsServer.address.port}`, weight: 1, security: "tls", ca }],
          legacy: [{ address: `127.0.0.1:${plainServer.address.port}`, weight: 1, security: "plain" }]
        }
      }),
      undefined,
      { credentials: makeCredentialHolder(await pki.credentials(STORE)) }
    )
    const secured = await call(caller.outboundPort, { headers: { host: "secured" } })
    expect([secured.status, String(secured.body)]).toStrictEqual([200, "from tls"])
    const legacy = await call(caller.outboundPort, { headers: { host: "legacy" } })
    expect([legacy.status, String(legacy.body)]).toStrictEqual([200, "from plain"])
    // Against a CA that did not sign it, the reference server is refused.
    writeFileSync(join(dir, "other.pem"), foreign.root.certificatePem)
    const strict = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", node: "strict", endpoints: { secured: [{ address: `127.0.0.1:${tlsServer.address.port}`, weight: 1, security: "tls", ca: join(dir, "other.pem") }] } }),
      undefined,
      { credentials: makeCredentialHolder(await pki.credentials(STORE)) }
    )
    const refused = await call(strict.outboundPort, { headers: { host: "secured" } })
    expect([refused.status, refused.headers["x-iip-mesh-error"]]).toStrictEqual([502, "outbound; reason=peer_untrusted"])
  })

  it("a ca= file that cannot be read (missing, a FIFO nobody writes, over 64 KiB) trusts nothing, said in the log: not the system's roots, never a blocked event loop", async () => {
    const reference = await ipServerCertificate(pki, "127.0.0.1")
    const tlsServer = new IipServer({ port: 0, mesh: false, log: () => {}, tls: { credentials: reference, requireClientCertificate: false, minVersion: "TLSv1.2" } })
    tlsServer.handlePrefix("/", () => "from tls")
    await tlsServer.listen()
    cleanup.add(() => tlsServer.close())
    const dir = mkdtempSync(join(tmpdir(), "mtls-ca-unreadable-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    execFileSync("mkfifo", [join(dir, "fifo.pem")])
    writeFileSync(join(dir, "huge.pem"), pki.root.certificatePem + " ".repeat(70_000))
    // The system's roots are this mesh's root here: a CA read as nothing used to fall back on them.
    const system = tls.getCACertificates("default")
    tls.setDefaultCACertificates([pki.root.certificatePem])
    cleanup.add(async () => tls.setDefaultCACertificates(system))
    const log: Array<{ event: string; fields: Record<string, unknown> }> = []
    const endpoint = (name: string) => [{ address: `127.0.0.1:${tlsServer.address.port}`, weight: 1, security: "tls" as const, ca: join(dir, name) }]
    const caller = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { missing: endpoint("missing.pem"), fifo: endpoint("fifo.pem"), huge: endpoint("huge.pem") } }),
      (event, fields) => void log.push({ event, fields }),
      { credentials: makeCredentialHolder(await pki.credentials(STORE)) }
    )
    // Before: the missing file's endpoint answered 200 (verified against the system's roots), the
    // FIFO's blocked the sidecar's event loop for good (readFileSync waited for a writer), the huge
    // file was read whole.
    for (const host of ["missing", "fifo", "huge"]) {
      const refused = await call(caller.outboundPort, { headers: { host } })
      expect([host, refused.status, refused.headers["x-iip-mesh-error"]]).toStrictEqual([host, 502, "outbound; reason=peer_untrusted"])
    }
    const unreadable = log.filter((entry) => entry.event === "tls-endpoint-ca-unreadable").map((entry) => [entry.fields.path, entry.fields.message])
    expect(unreadable).toContainEqual([join(dir, "fifo.pem"), "not a regular file"])
    expect(unreadable).toContainEqual([join(dir, "huge.pem"), `larger than 65536 bytes (${pki.root.certificatePem.length + 70_000})`])
    expect(unreadable.map(([path]) => path)).toContain(join(dir, "missing.pem"))
  })
})

describe("the identity mTLS proves is what the authorization policy sees", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a caller proven as store is allowed and named to the app in x-iip-mesh-client-id; one proven as another identity is forbidden", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mtls-authz-"))
    cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
    const policy = join(dir, "policy.json")
    writeFileSync(policy, JSON.stringify({ services: { catalog: { default: "deny", rules: [{ from: [STORE], paths: ["/*"], methods: ["GET"] }] } } }))
    const app = await startApp(cleanup, (req, res) => res.end(String(req.headers["x-iip-mesh-client-id"])))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, authzPolicy: policy }), undefined, { credentials: makeCredentialHolder(await pki.credentials(CATALOG)) })
    const caller = async (identity: string) =>
      startSidecar(
        cleanup,
        sidecarConfig({ service: "store", node: `caller-${identity.split("/").at(-1)}`, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] } }),
        undefined,
        { credentials: makeCredentialHolder(await pki.credentials(identity)) }
      )
    const store = await caller(STORE)
    const allowed = await call(store.outboundPort, { path: "/item", headers: { host: "catalog", "x-iip-mesh-client-id": "spiffe://iip-mesh.local/svc/admin" } })
    expect([allowed.status, String(allowed.body)]).toStrictEqual([200, STORE])
    const intruder = await caller("spiffe://iip-mesh.local/svc/intruder")
    const denied = await call(intruder.outboundPort, { path: "/item" })
    expect([denied.status, denied.headers["x-iip-mesh-error"]]).toStrictEqual([403, "inbound; reason=forbidden"])
    expect(app.seen.length).toBe(1)
  })
})

describe("security=mtls on an endpoint", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("is honoured with --mtls off when the sidecar has credentials, and refused by name without any", async () => {
    const app = await startApp(cleanup, ok)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), undefined, { credentials: makeCredentialHolder(await pki.credentials(CATALOG)) })
    const endpoints = { catalog: [{ address: b.inboundAddress, weight: 1, security: "mtls" as const }] }
    const off = await startSidecar(cleanup, sidecarConfig({ service: "store", node: "off", mtls: "off", endpoints }), undefined, { credentials: makeCredentialHolder(await pki.credentials(STORE)) })
    expect((await call(off.outboundPort)).status).toBe(200)
    const log: Array<string> = []
    const bare = await startSidecar(cleanup, sidecarConfig({ service: "store", node: "bare", endpoints }), (event) => void log.push(event))
    const refused = await call(bare.outboundPort)
    expect([refused.status, refused.headers["x-iip-mesh-error"]]).toStrictEqual([502, "outbound; reason=peer_untrusted"])
    expect(log).toContain("mtls-without-credentials")
    expect(app.seen.length).toBe(1)
  })
})
