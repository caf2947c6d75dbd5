// The admin control listener's Host check against DNS rebinding (src/admin/hostCheck.ts), sent over
// raw sockets so the bytes are exactly the odd Hosts a hostile page or client can produce: without a
// token, only a well-formed authority (RFC 3986: `[IPv6]` or a reg-name/IPv4, each with an optional
// `:digits` port) naming loopback is served; a malformed one is 400, a well-formed other host 403,
// and neither changes state.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { RawHttpClient } from "../support/rawHttp.ts"
import { sidecarConfig, startAdminListeners, startSidecar } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

const statusOf = (startLine: string) => Number(startLine.split(" ")[1])

/** One request on a fresh connection, its head written as given (each `hosts` entry one Host line): the answer's status and body. */
const send = async (port: number, hosts: ReadonlyArray<string>, method = "GET", path = "/mesh", body = "") => {
  const client = await RawHttpClient.connect(cleanup, port)
  const hostLines = hosts.map((host) => `Host: ${host}\r\n`).join("")
  client.write(`${method} ${path} HTTP/1.1\r\n${hostLines}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`)
  await client.untilResponses(1)
  const answer = client.responses[0]
  client.destroy()
  return answer === undefined ? { status: 0, body: "" } : { status: statusOf(answer.startLine), body: answer.body.toString() }
}

describe("admin control listener: Host parsed strictly", () => {
  it("refuses malformed or non-loopback Hosts with a 4xx naming bad_host, changes nothing, and serves honest loopback ones", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
    const port = Number(new URL((await startAdminListeners(cleanup, running)).control).port)
    // 400: no authority, or more than one Host (RFC 9112 3.2); 403: a well-formed host that is not loopback.
    const odd: ReadonlyArray<readonly [string, ReadonlyArray<string>, number]> = [
      ["[::1]evil", ["[::1]evil"], 400],
      ["[::1]:80x", ["[::1]:80x"], 400],
      ["[::1]:", ["[::1]:"], 400],
      ["[::1", ["[::1"], 400],
      ["[::1%25lo]", ["[::1%25lo]"], 400],
      ["127.0.0.1.evil", ["127.0.0.1.evil"], 403],
      ["127.0.0.1:99999", ["127.0.0.1:99999"], 400],
      ["localhost:0", ["localhost:0"], 400],
      ["localhost:1:2", ["localhost:1:2"], 400],
      ["localhost evil", ["localhost evil"], 400],
      ["localhost@evil", ["localhost@evil"], 400],
      ["empty", [""], 403],
      ["two Host headers", [`127.0.0.1:${port}`, "evil.example"], 400],
      ["two loopback Host headers", [`127.0.0.1:${port}`, `127.0.0.1:${port}`], 400],
      ["no Host", [], 400]
    ]
    for (const [what, hosts, status] of odd) {
      const answer = await send(port, hosts, "PUT", "/mesh/catalog/127.0.0.1:1/weight", "0")
      expect(answer.status, what).toBe(status)
      // Node answers a request without Host with its own bare 400 before any handler runs.
      if (hosts.length > 0) expect(JSON.parse(answer.body), what).toMatchObject({ error: "bad_host" })
    }
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(1)
    for (const host of [`127.0.0.1:${port}`, `[::1]:${port}`, "localhost", "LocalHost", `localhost:${port}`, "127.0.0.1", "[::1]"]) {
      expect((await send(port, [host])).status, host).toBe(200)
    }
  })
})
