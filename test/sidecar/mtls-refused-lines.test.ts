// A stranger at a sidecar's mTLS inbound port can open connections in a loop, each refused (no
// certificate of the mesh): every refusal was one `mtls-refused` line, as often as it liked (100
// handshakes, 100 lines on main). Now at most 20 such lines a minute (src/sidecar/meshTls.ts), as
// the mtls-plain-peer-accepted line of each plain peer in permissive mode (60 peers, 60 lines on main),
// and the sidecar still serves.
import * as net from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { makeCredentialHolder } from "../../src/identity/credentials.ts"
import { MESH_ALPN } from "../../src/iip/tls.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

const CATALOG = "spiffe://iip-mesh.local/svc/catalog"
const strangers = 100

let pki: TestPki
beforeAll(async () => {
  pki = await makeTestPki("mesh")
})

describe("mtls-refused lines at the inbound port", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${strangers} handshakes without a client certificate give at most 20 lines`, async () => {
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const app = await startApp(cleanup, (_req, res) => res.end("ok"))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), (event, fields) => void events.push({ event, fields }), {
      credentials: makeCredentialHolder(await pki.credentials(CATALOG))
    })
    const [host, port] = b.inboundAddress.split(":")
    let ended = 0
    for (let i = 0; i < strangers; i += 25) {
      await Promise.all(Array.from({ length: 25 }, () =>
        new Promise<void>((resolve) => {
          const socket = tls.connect({ host, port: Number(port), ALPNProtocols: [MESH_ALPN], rejectUnauthorized: false })
          cleanup.add(() => socket.destroy())
          socket.on("error", () => {})
          // Read the refusal the sidecar answers with: its end closes the socket.
          socket.resume()
          socket.once("secureConnect", () => socket.write(Buffer.of(1)))
          socket.once("close", () => {
            ended++
            resolve()
          })
        })))
    }
    expect(ended).toBe(strangers)
    const refused = () => events.filter((e) => e.event === "mtls-refused")
    await waitFor(() => refused().length > 0, 5000, "an mtls-refused line")
    expect(refused().length).toBeLessThanOrEqual(20)
    expect(refused()[0]!.fields.direction).toBe("inbound")
    expect(app.seen.length).toBe(0)
  }, 60_000)
  it("permissive: 60 plain peers, each closed at its bad first byte, give 20 mtls-plain-peer-accepted lines", async () => {
    const events: Array<string> = []
    const app = await startApp(cleanup, (_req, res) => res.end("ok"))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, mtls: "permissive" }), (event) => void events.push(event), {
      credentials: makeCredentialHolder(await pki.credentials(CATALOG))
    })
    const [host, port] = b.inboundAddress.split(":")
    await Promise.all(Array.from({ length: 60 }, () =>
      new Promise<void>((resolve) => {
        const socket = net.connect({ host, port: Number(port) }, () => socket.write(Buffer.of(9)))
        cleanup.add(() => socket.destroy())
        socket.on("error", () => {})
        socket.resume()
        socket.once("close", () => resolve())
      })))
    expect(events.filter((event) => event === "mtls-plain-peer-accepted").length).toBe(20)
  }, 60_000)
})
