// A stop (what SIGTERM does under the CLI) once half of 200 concurrent requests reached the app,
// which answers each after 0 to 2 s, some past A's 1 s drain timeout: every request ends in one of
// the allowed endings (an answer, a typed refusal naming its hop, or the connection lost), none
// hangs, no 200 carries a body cut short, and each the app took with under 500 ms to go is answered.
// (Seen: the requests A had not read when the stop began, about half, are reset unread, as nginx's
// graceful stop closes its idle connections; those the app held past the drain are reset too. In
// three runs 103 reached the app, 74 to 80 were answered: 97 reset unread, 23 to 29 held past it.)
import * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startMesh } from "../support/sidecarHarness.ts"

type Ending = "answered" | "refused" | "lost"

describe("A stopped under load", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("200 requests in flight: each is answered whole, refused with a typed error, or sees its connection lost; none hangs; the app's quick ones answered", async () => {
    let arrived = 0
    const quick: Array<number> = []
    const answered = new Set<number>()
    const mesh = await startMesh(cleanup, (req, res) => {
      arrived++
      const ms = Number(new URL(req.url!, "http://x").searchParams.get("ms"))
      if (ms < 500) quick.push(ms)
      const delay = Number(new URL(req.url!, "http://x").searchParams.get("ms"))
      req.resume()
      setTimeout(() => res.end(`done ${delay}`), delay)
    }, { a: { drainTimeoutMs: 1000 } })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 200 })
    cleanup.add(() => agent.destroy())
    const one = (i: number): Promise<Ending> =>
      new Promise((done) => {
        const ms = ((i * 7) % 500) * 4
        const req = http.get({ host: "127.0.0.1", port: mesh.a.outboundPort, path: `/?ms=${ms}`, agent, headers: { host: "catalog" } }, (res) => {
          let body = ""
          res.setEncoding("utf8")
          res.on("data", (chunk: string) => (body += chunk))
          res.once("end", () => {
            if (res.statusCode === 200) {
              expect(body).toBe(`done ${ms}`)
              answered.add(ms)
              done("answered")
            } else {
              expect(res.headers["x-iip-mesh-error"], `status ${res.statusCode}: ${body}`).toMatch(/^(outbound|inbound|app); reason=[a-z_]+$/)
              done("refused")
            }
          })
          res.once("error", () => done("lost"))
        })
        req.once("error", () => done("lost"))
      })
    const endings = Array.from({ length: 200 }, (_, i) => one(i))
    await waitFor(() => arrived >= 100, 5000, "half the requests at the app")
    const stopped = mesh.a.stop()
    const all = await withTimeout(Promise.all(endings), 5000, "every request to end")
    await withTimeout(stopped, 5000, "A's stop")
    const count = (ending: Ending) => all.filter((e) => e === ending).length
    expect(count("answered") + count("refused") + count("lost")).toBe(200)
    expect(quick.length).toBeGreaterThan(0)
    expect(quick.filter((ms) => !answered.has(ms))).toEqual([])
  }, 20_000)
})
