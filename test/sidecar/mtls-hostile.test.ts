// Hostile TLS peers of a sidecar's mTLS, a client at its inbound port and a callee of its outbound
// side (wave 2: no input may crash, desync or exhaust a sidecar): what a refused peer's
// certificate says reaches the log only sanitized.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { makeCredentialHolder } from "../../src/identity/credentials.ts"
import { MESH_ALPN } from "../../src/iip/tls.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

const CATALOG = "spiffe://iip-mesh.local/svc/catalog"
/** What a log viewer may act on or hide behind: C0/C1 controls, line and paragraph separators, bidi overrides. */
const unsafe = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/

let pki: TestPki
beforeAll(async () => {
  pki = await makeTestPki("mesh")
})

/** A self-signed client certificate (trusted by no one) whose subject is `subject`. */
const selfSigned = async (subject: string) => {
  const pair = await generateKeyPair()
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: new x509.Name([{ CN: [subject] }]),
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys: pair.keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" }
  })
  return { key: pair.privateKeyPem, cert: certificate.toString("pem") }
}

describe("hostile mTLS peers", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a refused client's certificate subject with bidi overrides, line separators and escapes reaches the log escaped", async () => {
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const app = await startApp(cleanup, (_req, res) => res.end("ok"))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), (event, fields) => void events.push({ event, fields }), {
      credentials: makeCredentialHolder(await pki.credentials(CATALOG))
    })
    const [host, port] = b.inboundAddress.split(":")
    const hostile = await selfSigned("admin\u202egnp.exe\u2028forged line\u001b[31m\u0085")
    const socket = tls.connect({ host, port: Number(port), ...hostile, ALPNProtocols: [MESH_ALPN], rejectUnauthorized: false })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    await waitFor(() => events.some((e) => e.event === "mtls-refused"), 5_000, "the refusal in the log")
    const refused = events.find((e) => e.event === "mtls-refused")!
    expect(String(refused.fields.peer)).toContain("admin")
    expect(String(refused.fields.peer)).not.toMatch(unsafe)
    expect(app.seen.length).toBe(0)
  })

  it("a callee whose self-signed certificate's subject carries the same is refused, and logged escaped too", async () => {
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const hostile = await selfSigned("catalog\u202egnp.exe\u2028forged line")
    const server = tls.createServer({ ...hostile, ALPNProtocols: [MESH_ALPN] }, (socket) => socket.destroy())
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const a = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: `127.0.0.1:${(server.address() as AddressInfo).port}`, weight: 1, identity: CATALOG }] } }),
      (event, fields) => void events.push({ event, fields }),
      { credentials: makeCredentialHolder(await pki.credentials("spiffe://iip-mesh.local/svc/store")) }
    )
    const answer = await call(a.outboundPort, { path: "/item", headers: { host: "catalog" } })
    expect(answer.status).toBeGreaterThanOrEqual(500)
    const refused = events.find((e) => e.event === "mtls-refused" && e.fields.direction === "outbound")!
    expect(String(refused.fields.peer)).toContain("catalog")
    expect(String(refused.fields.peer)).not.toMatch(unsafe)
  })
})
