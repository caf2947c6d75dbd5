// What the inbound sidecar B holds of its app's answers gathered whole, across all requests
// (appExchange.ts's answer budget, `maxQueuedBytes`): a plain IIP caller's answer goes back as one
// packet, so B gathers it (up to 16 MiB each; 256 pool sockets: 4 GiB; from an h2c app, whose
// answer streams, its server session gathered it) and a mesh caller's small one (declared up to
// 64 KiB) too. Here an app holds the end of every answer until the test lets it go, so B holds
// what it gathered for as long as the test looks: with the budget, what B holds (its gauge,
// iip_mesh_inbound_answer_bytes) stays within it, a plain caller's answer past it is refused at
// once (typed overloaded, at the inbound hop), a mesh caller's streams instead; every caller gets
// its whole answer or that error. Before, B gathered every one (4 MiB against 2.5).
import * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { settle, type Settled, startClient } from "../support/meshTest.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024

/** B's gauge of the answers it holds gathered whole. */
const answerBytes = async (b: RunningSidecar): Promise<number> =>
  value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_inbound_answer_bytes")

/** Polls an async condition until it holds, within `ms`. */
const until = async (condition: () => Promise<boolean>, ms: number, what: string): Promise<void> => {
  const deadline = performance.now() + ms
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise<void>((resolve) => setTimeout(resolve, 5))
  }
}

/** An app that answers every request with `size` bytes, all but its end at once; `release` sends the ends. */
const startHoldingApp = async (cleanup: Cleanup, size: number, declared: boolean): Promise<{ readonly app: { readonly address: string }; readonly release: () => void }> => {
  const held: Array<http.ServerResponse> = []
  let released = false
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    res.on("error", () => {})
    res.writeHead(200, declared ? { "content-length": String(size) } : {})
    // Declared: all but the last byte now; chunked: the whole body now, its last chunk (the end) later.
    res.write(Buffer.alloc(declared ? size - 1 : size, 0x61))
    if (released) res.end(declared ? "a" : undefined)
    else held.push(res)
  })
  const release = () => {
    released = true
    for (const res of held.splice(0)) res.end(declared ? "a" : undefined)
  }
  return { app, release }
}

/** The same over h2c (`appProtocol: "h2c"`): each answer a stream of `size` bytes whose end waits for `release`. */
const startHoldingH2App = async (cleanup: Cleanup, size: number): Promise<{ readonly app: { readonly address: string }; readonly release: () => void }> => {
  const held: Array<http2.ServerHttp2Stream> = []
  let released = false
  const server = http2.createServer()
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on("session", (session) => {
    sessions.add(session)
    session.on("close", () => sessions.delete(session))
  })
  server.on("stream", (stream) => {
    stream.on("error", () => {})
    stream.respond({ ":status": 200 })
    stream.write(Buffer.alloc(size, 0x61))
    if (released) stream.end()
    else held.push(stream)
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => {
    for (const session of sessions) session.destroy()
    server.close()
  })
  const release = () => {
    released = true
    for (const stream of held.splice(0)) if (!stream.destroyed) stream.end()
  }
  return { app: { address: `${LOOPBACK}:${(server.address() as net.AddressInfo).port}` }, release }
}

/** 4 plain IIP callers (a connection each: one channel answers in order) asking B at once. */
const plainCalls = (cleanup: Cleanup, b: RunningSidecar): Array<Promise<Settled<Buffer>>> =>
  Array.from({ length: 4 }, (_, i) => settle(startClient(cleanup, b.sidecar.inbound.port, { mesh: false }).call(`/big/${i}`, "{}", { timeoutMs: 8000 })))

describe("the inbound side's budget for answers gathered whole", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  for (const kind of ["of declared length", "chunked", "streamed over h2c"] as const) {
    it(`4 plain callers, 1 MiB answers ${kind}, a 2.5 MiB budget: B holds 2 MiB, 2 callers get their whole answer, 2 a typed refusal`, async () => {
      const h2c = kind === "streamed over h2c"
      const { app, release } = h2c ? await startHoldingH2App(cleanup, MiB) : await startHoldingApp(cleanup, MiB, kind === "of declared length")
      const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, maxQueuedBytes: 2.5 * MiB, ...(h2c ? { appProtocol: "h2c" as const } : {}) }))
      const calls = plainCalls(cleanup, b)
      const outcomes: Array<Settled<Buffer> | undefined> = [undefined, undefined, undefined, undefined]
      calls.forEach((call, i) => void call.then((outcome) => (outcomes[i] = outcome)))
      const refused = () => outcomes.filter((o) => o?.ok === true && o.value.length < 1024)
      // A third answer would pass the budget whichever way it is counted (its declared length at its
      // head, or chunk by chunk): two are refused while the app still holds every answer's end.
      await until(async () => refused().length === 2 && (await answerBytes(b)) === 2 * MiB, 5000, "2 refusals and B holding the 2 other answers whole")
      for (const outcome of refused()) {
        const body = JSON.parse((outcome as { value: Buffer }).value.toString()) as { code: number; message: string }
        expect(body.code).toBe(-1)
        expect(body.message).toMatch(/^handler fail:an answer of \d+ bytes or more from app at .* does not fit in the 2621440 bytes of answers the inbound sidecar may hold gathered whole/)
      }
      release()
      const all = await withTimeout(Promise.all(calls), 5000, "every plain call")
      const whole = all.filter((o) => o.ok && o.value.length === MiB)
      expect(whole).toHaveLength(2)
      expect(await answerBytes(b)).toBe(0)
    }, 10_000)
  }

  it("20 mesh callers through A, 60 KiB answers, a 1 MiB budget at B: 17 gathered whole, 3 stream at once, every caller gets its whole answer", async () => {
    const size = 60 * 1024
    const { app, release } = await startHoldingApp(cleanup, size, true)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, maxQueuedBytes: MiB }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    let heads = 0
    const answers = Array.from({ length: 20 }, (_, i) =>
      settle(new Promise<{ status: number; bytes: number }>((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port: a.outboundPort, path: `/small/${i}`, headers: { host: "catalog" }, agent: false }, (response) => {
          heads++
          let bytes = 0
          response.on("data", (chunk: Buffer) => (bytes += chunk.length))
          response.on("end", () => resolve({ status: response.statusCode ?? 0, bytes }))
          response.on("error", reject)
        })
        request.on("error", reject)
        cleanup.add(() => request.destroy())
      })))
    // 17 answers of 60 KiB fit in 1 MiB; the other 3 do not, and stream: their heads reach their callers while the app holds every end.
    await until(async () => heads === 3 && (await answerBytes(b)) === 17 * size, 5000, "3 streamed answers' heads and B holding the 17 others")
    release()
    const all = await withTimeout(Promise.all(answers), 5000, "every mesh call")
    expect(all.filter((answer) => answer.ok && answer.value.status === 200 && answer.value.bytes === size)).toHaveLength(20)
    expect(await answerBytes(b)).toBe(0)
  }, 10_000)

  it("callers that go away while B gathers their answers: what those answers took of the budget comes back", async () => {
    const size = 60 * 1024
    const { app } = await startHoldingApp(cleanup, size, true)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, maxQueuedBytes: MiB }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const requests = Array.from({ length: 5 }, (_, i) => {
      const request = http.get({ host: "127.0.0.1", port: a.outboundPort, path: `/gone/${i}`, headers: { host: "catalog" }, agent: false })
      request.on("error", () => {})
      cleanup.add(() => request.destroy())
      return request
    })
    await until(async () => (await answerBytes(b)) === 5 * size, 5000, "B gathering the 5 answers whose ends the app holds")
    // A cancels each request at B (its caller went away): each exchange ends there and gives back what it took.
    for (const request of requests) request.destroy()
    await until(async () => (await answerBytes(b)) === 0, 5000, "B giving back what the 5 cancelled answers took")
  }, 10_000)
})
