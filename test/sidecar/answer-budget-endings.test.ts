// Every way an exchange at the inbound sidecar B can end gives back exactly what it took of B's
// answer budget (appExchange.ts's AnswerBudget, plainAnswer.ts for the h2c leg): success, the app's
// error, the caller's cancel, the caller's deadline (or B's default one for a plain caller, which
// sends none: over h2c it bounded only the answer's head, so a gathered answer held its part of the
// budget for as long as the app kept it open), the caller's connection lost, the app's
// connection lost (its declared length a lie: fewer bytes, then the close), more bytes than it
// declared, a refusal past the budget, and the h2c app's stream reset or session lost. B's gauge
// (iip_mesh_inbound_answer_bytes) is read all along: never below 0 nor above the budget, back to 0
// once every call has its one outcome. The app holds each answer that must be in flight until the
// test ends it, and the test waits for B's gauge to show what those answers took (their declared
// length at their heads, or what B gathered): no assertion depends on timing (where a deadline
// races the app's head, either order ends the same way), save the message at B's default deadline,
// which says whether the head came (the apps send it at once; 300 ms leaves the race to a stall
// of the test process that long between B's start of the exchange and the head's read).
import * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { settle, type Settled, startClient } from "../support/meshTest.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const KiB = 1024
const BUDGET = 256 * KiB
/** A held answer's declared length: B takes it from the budget at its head; the app sends half, then waits. */
const HOLD = 16 * KiB

/** B's gauge, every reading kept: none may be below 0 or above the budget. */
const gaugeOf = (b: RunningSidecar) => {
  const readings: Array<number> = []
  const read = async (): Promise<number> => {
    const bytes = value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_inbound_answer_bytes")
    readings.push(bytes)
    return bytes
  }
  /** Polls until the gauge reads `bytes` (and `also` holds), within `ms`. */
  const until = async (bytes: number, what: string, also: () => boolean = () => true, ms = 5000): Promise<void> => {
    const deadline = performance.now() + ms
    while (!((await read()) === bytes && also())) {
      if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (gauge ${readings.at(-1)})`)
      await new Promise<void>((resolve) => setTimeout(resolve, 5))
    }
  }
  const inRange = () => {
    expect(Math.min(...readings)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...readings)).toBeLessThanOrEqual(BUDGET)
  }
  return { read, until, inRange }
}

/** A plain IIP caller (a connection of its own: one channel answers in order); `close` drops its connection. */
const plainCall = (cleanup: Cleanup, b: RunningSidecar, path: string) => {
  const client = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
  return { outcome: settle(client.call(path, "{}", { timeoutMs: 8000 })), close: () => client.close() }
}

/** A plain caller's refusal or failure, as the reference's handler-fail body. */
const handlerFail = (outcome: Settled<Buffer>): string => {
  if (!outcome.ok) throw new Error(`expected a handler-fail answer, the call failed: ${String(outcome.error)}`)
  const body = JSON.parse(outcome.value.toString()) as { code: number; message: string }
  expect(body.code).toBe(-1)
  return body.message
}

/** B's inbound errors (iip_mesh_request_errors_total) whose labels match `labels`, summed. */
const errorCount = async (b: RunningSidecar, labels: RegExp): Promise<number> =>
  (await b.sidecar.telemetry.metrics.text()).body
    .split("\n")
    .filter((line) => line.startsWith("iip_mesh_request_errors_total{direction=\"inbound\"") && labels.test(line))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)

/** Polls until B's errors matching `labels` number `count` (the exchange counts its end after the caller's outcome). */
const errorsUntil = async (b: RunningSidecar, labels: RegExp, count: number, what: string): Promise<void> => {
  const deadline = performance.now() + 5000
  while ((await errorCount(b, labels)) !== count) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}: ${(await b.sidecar.telemetry.metrics.text()).body.split("\n").filter((line) => line.startsWith("iip_mesh_request_errors_total")).join("; ")}`)
    await new Promise<void>((resolve) => setTimeout(resolve, 5))
  }
}

/** A caller through A that B's app answers over HTTP/1.1; `abort` is the caller going away. */
const meshCall = (cleanup: Cleanup, a: RunningSidecar, path: string, headers: http.OutgoingHttpHeaders = {}, method = "GET") => {
  let request: http.ClientRequest | undefined
  const outcome = settle(new Promise<{ status: number; bytes: number }>((resolve, reject) => {
    request = http.request({ host: LOOPBACK, port: a.outboundPort, path, method, headers: { host: "catalog", ...headers }, agent: false }, (response) => {
      let bytes = 0
      response.on("data", (chunk: Buffer) => (bytes += chunk.length))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, bytes }))
      response.on("error", reject)
    })
    request.on("error", reject)
    request.end()
  }))
  cleanup.add(() => request?.destroy())
  return { outcome, abort: () => request!.destroy() }
}

describe("every ending of an exchange gives back what it took of B's answer budget", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("HTTP/1.1 app: success, app error, lying lengths, refusals, caller cancel and connection loss, app connection loss, deadline", async () => {
    const held = new Map<string, http.ServerResponse>()
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      res.on("error", () => {})
      const kind = (req.url ?? "").split("/")[1]
      if (kind === "ok") return res.writeHead(200, { "content-length": "1000" }).end(req.method === "HEAD" ? undefined : Buffer.alloc(1000, 0x61))
      if (kind === "err") return res.writeHead(500, { "content-length": "100" }).end(Buffer.alloc(100, 0x65))
      // More bytes than it declares: B reads the 1000 declared, the rest is no answer of it (and,
      // the connection closing, no other request's answer either, however the bytes are split).
      if (kind === "long") return req.socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n${"l".repeat(1500)}`)
      // Past the budget: declared (refused at its head), or chunked (refused as its bytes come).
      if (kind === "big") return res.writeHead(200, { "content-length": String(2 * BUDGET) }).end(Buffer.alloc(2 * BUDGET, 0x62))
      if (kind === "bigchunked") return res.writeHead(200).end(Buffer.alloc(BUDGET + 64 * KiB, 0x63))
      res.writeHead(200, { "content-length": String(HOLD) })
      res.write(Buffer.alloc(HOLD / 2, 0x68))
      held.set(req.url ?? "", res)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, maxQueuedBytes: BUDGET }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const gauge = gaugeOf(b)

    // Answers that come whole at once: the app's success and error, its head-only answer, one longer than it declared.
    const quick = await withTimeout(Promise.all([
      meshCall(cleanup, a, "/ok/m").outcome,
      meshCall(cleanup, a, "/ok/head", {}, "HEAD").outcome,
      meshCall(cleanup, a, "/err/m").outcome,
      meshCall(cleanup, a, "/long/m").outcome
    ]), 5000, "the quick mesh calls")
    expect(quick.map((o) => o.ok ? [o.value.status, o.value.bytes] : String(o.error))).toEqual([[200, 1000], [200, 0], [500, 100], [200, 1000]])
    const plainQuick = await withTimeout(Promise.all(["/ok/p", "/err/p", "/long/p"].map((path) => plainCall(cleanup, b, path).outcome)), 5000, "the quick plain calls")
    expect(plainQuick.map((o) => o.ok ? o.value.length : String(o.error))).toEqual([1000, 100, 1000])
    await gauge.until(0, "B giving back the quick answers")

    // Six answers in flight, each holding its declared length of the budget.
    const cancelled = [meshCall(cleanup, a, "/hold/cancel-1"), meshCall(cleanup, a, "/hold/cancel-2")]
    const dropped = [plainCall(cleanup, b, "/hold/drop-1"), plainCall(cleanup, b, "/hold/drop-2")]
    const cut = [meshCall(cleanup, a, "/hold/cut-m"), plainCall(cleanup, b, "/hold/cut-p")]
    await gauge.until(6 * HOLD, "6 held answers at B", () => held.size === 6)
    // Past what is left of the budget, a plain caller's answer is refused; what it took comes back.
    const refusals = await withTimeout(Promise.all([plainCall(cleanup, b, "/big/p").outcome, plainCall(cleanup, b, "/bigchunked/p").outcome]), 5000, "the refusals")
    for (const refusal of refusals) expect(handlerFail(refusal)).toMatch(/does not fit in the 262144 bytes of answers the inbound sidecar may hold gathered whole/)
    expect(await gauge.read()).toBe(6 * HOLD)
    await errorsUntil(b, /code="503",hop="inbound",reason="overloaded"/, 2, "B counting the refusals")
    // The callers go away (A cancels at B; a plain caller's connection closes), the app's connection breaks
    // short of what it declared.
    for (const one of cancelled) one.abort()
    for (const one of dropped) one.close()
    for (const path of ["/hold/cut-m", "/hold/cut-p"]) held.get(path)!.socket!.destroy()
    const ends = await withTimeout(Promise.all([...cancelled, ...dropped, ...cut].map((one) => one.outcome)), 5000, "the held calls' ends")
    expect(ends.slice(0, 4).every((o) => !o.ok)).toBe(true)
    expect(ends[4]!.ok && (ends[4]!.value as { status: number }).status).toBe(502)
    expect(handlerFail(ends[5] as Settled<Buffer>)).toMatch(/app answer broke off/)
    await gauge.until(0, "B giving back the 6 held answers")

    // The caller's deadline passes while the app holds its answer (through A; and a mesh IIP caller's own).
    const late = [meshCall(cleanup, a, "/hold/late-1", { "iip-timeout": "200" }), meshCall(cleanup, a, "/hold/late-2", { "iip-timeout": "200" })]
    const lateIip = settle(startClient(cleanup, b.sidecar.inbound.port).call("/hold/late-3", "{}", { timeoutMs: 200 }))
    const lateEnds = await withTimeout(Promise.all([...late.map((one) => one.outcome), lateIip]), 5000, "the late calls")
    expect(lateEnds.map((o) => o.ok ? (o.value as { status: number }).status : "failed")).toEqual([504, 504, "failed"])
    await gauge.until(0, "B giving back the answers whose deadline passed")
    gauge.inRange()
  }, 10_000)

  it("a plain caller's answer (no deadline of its own) ends at B's default deadline, from an HTTP/1.1 or an h2c app", async () => {
    const app1 = await startApp(cleanup, (req, res) => {
      req.resume()
      res.on("error", () => {})
      res.writeHead(200, { "content-length": String(HOLD) })
      res.write(Buffer.alloc(HOLD / 2, 0x68))
    })
    // The h2c app's answer streams at B (past 64 KiB): plainAnswer.ts gathers it.
    const app2 = await startH2App(cleanup, (stream) => stream.write(Buffer.alloc(96 * KiB, 0x68)))
    const config = { service: "catalog", tracing: false, maxQueuedBytes: BUDGET, inboundDefaultTimeoutMs: 300 }
    const b1 = await startSidecar(cleanup, sidecarConfig({ ...config, app: app1.address }))
    const b2 = await startSidecar(cleanup, sidecarConfig({ ...config, app: app2.address, appProtocol: "h2c" }))
    const calls = [plainCall(cleanup, b1, "/held").outcome, plainCall(cleanup, b2, "/held").outcome]
    for (const [i, outcome] of calls.entries()) {
      expect(handlerFail(await withTimeout(outcome, 5000, `the plain call to the ${i === 0 ? "HTTP/1.1" : "h2c"} app past B's default deadline`))).toMatch(i === 0 ? /the call's deadline of 300 ms passed while the app's answer came in/ : /the call's deadline of 300 ms passed while the app's answer streamed/)
    }
    for (const b of [b1, b2]) {
      const gauge = gaugeOf(b)
      await gauge.until(0, "B giving back the answer past its deadline")
      gauge.inRange()
    }
  }, 10_000)

  it("h2c app, plain callers: success, the app's stream reset, its session lost, lying lengths, the caller's connection lost, refusal", async () => {
    const streams = new Map<string, http2.ServerHttp2Stream>()
    const app = await startH2App(cleanup, (stream, path) => {
      // Over 64 KiB: the answer streams at B, and B gathers it for its plain caller.
      stream.write(Buffer.alloc(path === "/big" ? BUDGET : 80 * KiB, 0x68))
      streams.set(path, stream)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, maxQueuedBytes: BUDGET, appProtocol: "h2c" }))
    const gauge = gaugeOf(b)
    const whole = plainCall(cleanup, b, "/whole")
    const reset = plainCall(cleanup, b, "/reset")
    const dropped = plainCall(cleanup, b, "/dropped")
    // Three answers of 80 KiB gathered (240 of 256 KiB): a fourth answer does not fit.
    await gauge.until(3 * 80 * KiB, "B gathering the 3 answers", () => streams.size === 3)
    const refused = plainCall(cleanup, b, "/big")
    expect(handlerFail(await withTimeout(refused.outcome, 5000, "the refusal"))).toMatch(/does not fit in the 262144 bytes/)
    expect(await gauge.read()).toBe(3 * 80 * KiB)
    // B counts the refusal as its own overload, as the HTTP/1.1 leg does, not as the app's answer broken off.
    await errorsUntil(b, /code="503",hop="inbound",reason="overloaded"/, 1, "B counting the refusal")
    expect(await errorCount(b, /hop="app"/)).toBe(0)
    streams.get("/whole")!.end()
    // A reset (INTERNAL_ERROR) with no END_STREAM before it: node's close(code) ends a stream whose
    // writes are done with END_STREAM first, where its window lets it (the answer whole).
    streams.get("/reset")!.destroy(new Error("the app broke off"))
    dropped.close()
    const [wholeEnd, resetEnd, droppedEnd] = await withTimeout(Promise.all([whole.outcome, reset.outcome, dropped.outcome]), 5000, "the h2c calls' ends")
    expect(wholeEnd.ok && wholeEnd.value.length).toBe(80 * KiB)
    expect(handlerFail(resetEnd)).toMatch(/^handler fail:app at /)
    expect(droppedEnd.ok).toBe(false)
    await gauge.until(0, "B giving back the h2c answers")
    // The app's session is lost while B gathers an answer.
    const lost = plainCall(cleanup, b, "/lost")
    await gauge.until(80 * KiB, "B gathering the answer", () => streams.has("/lost"))
    streams.get("/lost")!.session!.destroy()
    expect(handlerFail(await withTimeout(lost.outcome, 5000, "the lost session's call"))).toMatch(/^handler fail:app at /)
    await gauge.until(0, "B giving back the answer of the lost session")
    // Lengths that lie: more bytes than declared (B's h2 session refuses them), fewer (the stream ends short).
    const longer = plainCall(cleanup, b, "/longer")
    expect(handlerFail(await withTimeout(longer.outcome, 5000, "the longer answer's call"))).toMatch(/^handler fail:app at /)
    const short = plainCall(cleanup, b, "/short")
    await gauge.until(80 * KiB, "B gathering the short answer", () => streams.has("/short"))
    streams.get("/short")!.end()
    expect(handlerFail(await withTimeout(short.outcome, 5000, "the short answer's call"))).toMatch(/^handler fail:app at /)
    await gauge.until(0, "B giving back the answers whose lengths lied")
    gauge.inRange()
  }, 10_000)
})

/**
 * An h2c app on 127.0.0.1:0 that answers 200 to every stream and hands it to `onStream` (its end is
 * the test's); `/short` and `/longer` declare 100 and 70 KiB, whatever they send.
 */
const startH2App = async (cleanup: Cleanup, onStream: (stream: http2.ServerHttp2Stream, path: string) => void): Promise<{ readonly address: string }> => {
  const server = http2.createServer()
  const sessions = new Set<http2.ServerHttp2Session>()
  server.on("session", (session) => {
    sessions.add(session)
    session.on("error", () => {})
    session.on("close", () => sessions.delete(session))
  })
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    const path = String(headers[":path"])
    stream.respond({ ":status": 200, ...(path === "/short" ? { "content-length": String(100 * KiB) } : path === "/longer" ? { "content-length": String(70 * KiB) } : {}) })
    onStream(stream, path)
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => {
    for (const session of sessions) session.destroy()
    server.close()
  })
  return { address: `${LOOPBACK}:${(server.address() as net.AddressInfo).port}` }
}
