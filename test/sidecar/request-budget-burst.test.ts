// A burst through a real sidecar pair at twice the callee sidecar's per-connection request budget
// (PROTOCOL.md §10 `maxRequests`): B states its maxQueuedRequestsPerConnection in its hello, A keeps
// to it and holds the rest. With the app holding every request it gets, the app has the budget's
// worth while A still waits for all of them; once the app answers, the held ones go out and every
// request is answered 200 (none 503 at A, none stuck).
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call, startMesh } from "../support/sidecarHarness.ts"

const budget = 4
const burst = 2 * budget

describe("a burst at twice the callee's request budget through a sidecar pair", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it(`${burst} requests at once, budget ${budget}: A holds past the budget, then all are answered 200`, async () => {
    const waiting: Array<http.ServerResponse> = []
    let holding = true
    const answer = (res: http.ServerResponse) => {
      res.writeHead(200, { "content-length": 2 })
      res.end("ok")
    }
    const { a } = await startMesh(
      cleanup,
      (req, res) => {
        req.resume()
        req.once("end", () => (holding ? waiting.push(res) : answer(res)))
      },
      { a: { tracing: false }, b: { tracing: false, maxQueuedRequestsPerConnection: budget } }
    )
    const answers = Promise.all(Array.from({ length: burst }, (_, i) => call(a.outboundPort, { method: "POST", path: `/r${i}`, body: "x".repeat(1024) })))
    const sessions = () => a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("catalog")[0]!).meshSessions
    const calling = () => sessions().reduce((n, session) => n + session.callingCount, 0)
    await waitFor(() => waiting.length === budget && calling() === burst, 5000, `the app to hold ${budget} and A to wait for all ${burst}`)
    expect(sessions().map((session) => session.agreed.maxRequests)).toEqual([budget])
    holding = false
    for (const res of waiting.splice(0)) answer(res)
    expect((await answers).map((a) => `${a.status} ${a.body.toString()}`)).toEqual(Array.from({ length: burst }, () => "200 ok"))
    expect(waiting).toEqual([])
  })
})
