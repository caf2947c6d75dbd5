// Graceful restarts do not eject: B1 (of two instances) restarts three times in a row under load
// (go-away, drain, listener closed, a new B1 on the same port). The refusals of the restart gap come
// right after B1's go-away, so A holds B1 out as restarting (no ejection, no doubling) and redials it
// in the background: after each restart the new B1 answers requests again within a couple of
// seconds, and A's view of B1 shows no ejection. (From a chaos soak: each restart ejected the
// instance, ejections doubled, and a ready instance sat out 39 s after its fourth restart.)
import { Agent } from "node:http"
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { progress, type RunningSidecar, sidecarConfig, startApp, startSidecar, timedCall } from "../support/sidecarHarness.ts"

const instanceApp = (name: string): http.RequestListener => (req, res) => {
  req.resume()
  req.on("end", () => res.end(name))
}

interface Outcome {
  readonly startedAt: number
  readonly status: number
  readonly instance: string | undefined
}

describe("graceful restarts of one of two instances", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("no ejection, and traffic back on the restarted instance within 2 s, each of three times", async () => {
    const app2 = await startApp(cleanup, instanceApp("b2"))
    const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b2", app: app2.address }))
    const app1 = await startApp(cleanup, instanceApp("b1-0"))
    let b1: RunningSidecar = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b1", app: app1.address }))
    const b1Address = b1.inboundAddress
    const a = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b1Address, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] } })
    )

    const outcomes: Array<Outcome> = []
    const { record, until } = progress(outcomes)
    const agent = new Agent({ keepAlive: true, maxSockets: 4 })
    cleanup.add(() => agent.destroy())
    let running = true
    const worker = async (id: number) => {
      for (let i = 0; running; i++) {
        const { startedAt, answer } = await timedCall(a.outboundPort, `/w${id}/${i}`, agent)
        record({ startedAt, status: answer?.status ?? 0, instance: answer?.status === 200 ? answer.body.toString() : undefined })
      }
    }
    const workers = [0, 1].map(worker)
    const stopLoad = async () => {
      running = false
      await Promise.all(workers)
    }
    cleanup.add(stopLoad)

    const backAfterMs: Array<number> = []
    try {
      await until(() => outcomes.some((o) => o.instance === "b1-0") && outcomes.some((o) => o.instance === "b2"), "load over both instances")
      for (let restart = 1; restart <= 3; restart++) {
        await b1.stop()
        const app = await startApp(cleanup, instanceApp(`b1-${restart}`))
        b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b1", app: app.address, inbound: b1Address }))
        const upAt = performance.now()
        await until(() => outcomes.some((o) => o.instance === `b1-${restart}` && o.startedAt > upAt), `traffic on B1 after restart ${restart}`, 10_000).catch((e) => {
          console.log(JSON.stringify(a.sidecar.registry.view()), outcomes.slice(-5))
          throw e
        })
        backAfterMs.push(outcomes.find((o) => o.instance === `b1-${restart}` && o.startedAt > upAt)!.startedAt - upAt)
      }
    } finally {
      await stopLoad()
    }
    const view = a.sidecar.registry.view().find((s) => s.service === "catalog")!.endpoints.find((e) => e.address === b1Address)!
    console.log(`restarts: traffic back on B1 after ${backAfterMs.map((ms) => `${ms.toFixed(0)} ms`).join(", ")}; A's view of B1: ${JSON.stringify(view)}`)
    expect(outcomes.filter((o) => o.status !== 200)).toStrictEqual([])
    expect(view).toMatchObject({ health: "healthy", ejections: 0, failures: 0 })
    for (const ms of backAfterMs) expect(ms).toBeLessThan(2000)
  }, 60_000)
})
