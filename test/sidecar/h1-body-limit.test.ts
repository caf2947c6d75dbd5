// The request bodies A's outbound listener gathers whole before sending (outboundBody.ts readBody):
// one of up to 64 KiB with its length (held for retries) and any body for a plain IIP service (one
// packet, at most 16 MiB). Past the limit, an HTTP/1.1 caller reads 413 `body_too_large` with
// `connection: close`, then the lingering close drops the rest of its body (before: the socket
// was destroyed, curl "(52) Empty reply from server", node's client "write ECONNRESET"); none of
// the body reaches the service and the access log counts the 413. A body trickling in (a byte
// every 20 ms) ends at the request's deadline (`iip-timeout`) in 408 `body_timeout`, over HTTP/1.1
// (with the close) and HTTP/2 (then RST_STREAM NO_ERROR, the stream closed on the sidecar's side
// while the caller keeps its session); before, the exchange waited for the body until the
// listener's 300 s request timeout (HTTP/1.1) or for ever (HTTP/2). A body failing so is
// the caller's failure, not the endpoint's: twelve of them over two endpoints eject none (counted
// against the endpoint as a failed try, they ejected one), nor add a latency sample to it; a body
// slower than a per-try timeout but within the deadline still gets the try's time for its answer.
// A declared length past the limit is refused from the head. Real callers: curl, node's http and
// http2 clients, a raw socket for the trickle.
import { execFile, spawnSync } from "node:child_process"
import { writeFile } from "node:fs/promises"
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { gate } from "../support/netnsProcess.ts"
import { PLAIN_LIMIT, plainUploadSuite, startPlainUpload } from "../support/plainUpload.ts"
import { LOOPBACK } from "../support/sidecarHarness.ts"

const LIMIT = PLAIN_LIMIT
const TOO_LARGE = LIMIT + 1
/** The trickling callers' deadline (ms), and their pace: a byte every TRICKLE_MS. */
const DEADLINE_MS = 300
const TRICKLE_MS = 20

const curlGate = gate("past 16 MiB, curl with a length and chunked prints 413 with connection: close", spawnSync("curl", ["--version"]).status === 0 ? { ok: true } : { ok: false, reason: "no curl (apt curl)" })

interface H1Outcome {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

/** A POST of `body` by node's http client (`chunked`: in 1 MiB writes with no length); resolves with the answer read whole. */
const nodePost = (cleanup: Cleanup, port: number, body: Buffer, chunked: boolean): Promise<H1Outcome> =>
  new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { host: "legacy", ...(chunked ? {} : { "content-length": body.length }) }
    const req = http.request({ host: LOOPBACK, port, method: "POST", path: "/upload", headers, agent: false })
    cleanup.add(() => req.destroy())
    let answered = false
    req.on("response", (res) => {
      answered = true
      const parts: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => parts.push(chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts).toString() }))
      res.on("error", reject)
    })
    // The rest of the body written after the answer may fail once the sidecar closes: the answer is what counts.
    req.on("error", (error) => (answered ? undefined : reject(error)))
    if (!chunked) return void req.end(body)
    const piece = 1024 * 1024
    for (let at = 0; at < body.length; at += piece) req.write(body.subarray(at, at + piece))
    req.end()
  })

/** curl's POST of a file of TOO_LARGE bytes (`chunked`: Transfer-Encoding: chunked); its output: the answer's head, then `code=`. */
const curlPost = async (cleanup: Cleanup, port: number, chunked: boolean): Promise<string> => {
  const file = join(tmpdir(), `h1-body-limit-${process.pid}-${chunked ? "chunked" : "length"}.bin`)
  await writeFile(file, Buffer.alloc(TOO_LARGE, 7))
  cleanup.add(() => import("node:fs/promises").then((fs) => fs.rm(file, { force: true })))
  const args = ["-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null", "-w", "code=%{http_code}", "-H", "Host: legacy", ...(chunked ? ["-H", "Transfer-Encoding: chunked"] : []), "--data-binary", `@${file}`, `http://${LOOPBACK}:${port}/upload`]
  return new Promise<string>((resolve) => execFile("curl", args, (error, stdout, stderr) => resolve(error === null ? stdout : `${stdout} ${stderr}`)))
}

/**
 * A raw HTTP/1.1 caller that sends `head`, then every TRICKLE_MS `piece(n)` of its body for the nth
 * (by default a byte, never ending; undefined: nothing more); resolves with what it read once the
 * sidecar ended the connection (its FIN).
 */
const trickleH1 = (cleanup: Cleanup, port: number, head: string, piece: (n: number) => string | undefined = () => "x"): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(port, LOOPBACK)
    let sent = 0
    const timer = setInterval(() => {
      const next = piece(++sent)
      if (next === undefined) clearInterval(timer)
      else socket.write(next)
    }, TRICKLE_MS)
    cleanup.add(() => (clearInterval(timer), socket.destroy()))
    let answer = ""
    socket.setEncoding("latin1")
    socket.on("data", (text: string) => (answer += text))
    socket.on("end", () => (clearInterval(timer), resolve(answer)))
    socket.on("error", reject)
    socket.write(head)
  })

/**
 * A chunked body of `chunks` one-byte chunks, one every TRICKLE_MS, then its end, with `connection:
 * close` (the answer ends at the sidecar's FIN).
 */
const slowChunkedH1 = (cleanup: Cleanup, port: number, timeoutMs: number, chunks: number): Promise<string> =>
  trickleH1(
    cleanup,
    port,
    `POST /upload HTTP/1.1\r\nhost: legacy\r\niip-timeout: ${timeoutMs}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n`,
    (n) => (n < chunks ? "1\r\nx\r\n" : n === chunks ? "1\r\nx\r\n0\r\n\r\n" : undefined)
  )

/** An HTTP/2 caller whose body comes a byte every TRICKLE_MS, never ended; resolves when its stream closes. */
const trickleH2 = (cleanup: Cleanup, port: number): Promise<{ status: number; reason: unknown; rstCode: number | undefined }> =>
  new Promise((resolve, reject) => {
    const session = http2.connect(`http://${LOOPBACK}:${port}`)
    session.on("error", reject)
    const stream = session.request({ ":method": "POST", ":path": "/upload", ":authority": "legacy", "iip-timeout": String(DEADLINE_MS) })
    const timer = setInterval(() => stream.write("x"), TRICKLE_MS)
    cleanup.add(() => (clearInterval(timer), session.destroy()))
    let headers: http2.IncomingHttpHeaders = {}
    stream.on("response", (h) => (headers = h))
    stream.on("data", () => {})
    stream.on("error", reject)
    stream.on("close", () => {
      clearInterval(timer)
      resolve({ status: Number(headers[":status"] ?? 0), reason: headers["x-iip-mesh-error"], rstCode: stream.rstCode })
    })
  })

const statusOf = (answer: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1] ?? 0)

describe("a request body A gathers whole", () => {
  const upload = plainUploadSuite({ "/upload": (length) => `got ${length}` })
  const { cleanup } = upload

  const tooLarge = (outcome: H1Outcome): void => {
    expect(outcome.status).toBe(413)
    expect(outcome.headers["x-iip-mesh-error"]).toBe("outbound; reason=body_too_large")
    expect(outcome.headers["connection"]).toBe("close")
    expect(outcome.body).toContain(`at most ${LIMIT} bytes`)
  }

  it("past 16 MiB for a plain service, with a length, node's client reads 413 and the close; nothing reaches the service; logged", async () => {
    upload.received.length = 0
    upload.access.length = 0
    tooLarge(await withTimeout(nodePost(cleanup, upload.a.outboundPort, Buffer.alloc(TOO_LARGE, 7), false), 10_000, "the too-large call"))
    expect(upload.received).toEqual([])
    expect(upload.access).toEqual([expect.objectContaining({ status: 413, error: { hop: "outbound", reason: "body_too_large" } })])
  })

  it("past 16 MiB, chunked, node's client reads 413 and the close; nothing reaches the service", async () => {
    upload.received.length = 0
    tooLarge(await withTimeout(nodePost(cleanup, upload.a.outboundPort, Buffer.alloc(TOO_LARGE, 7), true), 10_000, "the too-large chunked call"))
    expect(upload.received).toEqual([])
  })

  it.skipIf(curlGate.skip)(curlGate.title, async () => {
    upload.received.length = 0
    for (const chunked of [false, true]) {
      const printed = await curlPost(cleanup, upload.a.outboundPort, chunked)
      expect(printed).toMatch(/^HTTP\/1\.1 413 /m)
      expect(printed).toMatch(/^x-iip-mesh-error: outbound; reason=body_too_large\r$/m)
      expect(printed).toMatch(/^connection: close\r$/m)
      expect(printed).toMatch(/code=413$/)
    }
    expect(upload.received).toEqual([])
  })

  it("declaring a length past 16 MiB for a plain service is answered 413 and the close from its head, before its body comes", async () => {
    upload.received.length = 0
    const head = `POST /upload HTTP/1.1\r\nhost: legacy\r\niip-timeout: 5000\r\ncontent-length: ${TOO_LARGE}\r\nexpect: 100-continue\r\n\r\n`
    // Nothing of the body is sent: the length alone must decide (a gather would wait for it to the deadline, a 408).
    const answer = await withTimeout(trickleH1(cleanup, upload.a.outboundPort, head, () => undefined), 4_000, "the answer")
    // Refused before the body is wanted: no 100 Continue first (expect-continue.test.ts).
    expect(answer).toMatch(/^HTTP\/1\.1 413 /)
    expect(answer).toMatch(/\r\nx-iip-mesh-error: outbound; reason=body_too_large\r\n/)
    expect(answer).toMatch(/\r\nconnection: close\r\n/)
    expect(upload.received).toEqual([])
  })

  it("of 100 KiB within the limit still reaches the service whole, the connection kept", async () => {
    upload.received.length = 0
    const outcome = await withTimeout(nodePost(cleanup, upload.a.outboundPort, Buffer.alloc(100 * 1024, 7), false), 10_000, "the 100 KiB call")
    expect(outcome.status).toBe(200)
    expect(outcome.body).toBe(`got ${100 * 1024}`)
    expect(upload.received).toEqual([100 * 1024])
  })

  for (const [name, framing] of [
    ["1,000 bytes long (held whole for retries)", "content-length: 1000"],
    ["100 KiB long (for the plain service)", `content-length: ${100 * 1024}`],
    ["chunked (for the plain service)", "transfer-encoding: chunked"]
  ] as const) {
    it(`trickling in over HTTP/1.1, ${name}, ends at the request's deadline in 408 body_timeout and the close`, async () => {
      upload.received.length = 0
      upload.access.length = 0
      const started = performance.now()
      const head = `POST /upload HTTP/1.1\r\nhost: legacy\r\niip-timeout: ${DEADLINE_MS}\r\n${framing}\r\n\r\n`
      // Chunked, the trickle's bytes are one chunk's data: its size line first.
      const answer = await withTimeout(trickleH1(cleanup, upload.a.outboundPort, framing.startsWith("transfer") ? `${head}100000\r\n` : head), 10_000, "the trickling call's answer")
      expect(statusOf(answer)).toBe(408)
      expect(answer).toMatch(/\r\nx-iip-mesh-error: outbound; reason=body_timeout\r\n/)
      expect(answer).toMatch(/\r\nconnection: close\r\n/)
      expect(answer).toContain(`within its deadline of ${DEADLINE_MS} ms`)
      // The deadline ended it, not the listener's request timeout (300 s) nor the body's end.
      expect(performance.now() - started).toBeLessThan(5_000)
      expect(upload.received).toEqual([])
      expect(upload.access).toEqual([expect.objectContaining({ status: 408, error: { hop: "outbound", reason: "body_timeout" } })])
    })
  }

  it("a body too slow is the caller's failure, counted as the request's error, none against the endpoints (no ejection)", async () => {
    // Two endpoints: the outlier detector ejects at most half of them, and one of two may go.
    const own = new Cleanup()
    try {
      const { a: two } = await startPlainUpload(own, { "/upload": (length) => `got ${length}` }, 2)
      const metric = async (pattern: RegExp): Promise<number> => {
        const { body } = await two.sidecar.telemetry.metrics.text()
        return body.split("\n").filter((line) => pattern.test(line)).reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
      }
      // Each endpoint past the outlier detector's five consecutive failures, had each counted against it.
      const head = `POST /upload HTTP/1.1\r\nhost: legacy\r\niip-timeout: ${DEADLINE_MS}\r\ntransfer-encoding: chunked\r\n\r\n100000\r\n`
      const answers = await withTimeout(Promise.all(Array.from({ length: 12 }, () => trickleH1(own, two.outboundPort, head))), 10_000, "twelve trickling calls")
      expect(answers.map(statusOf)).toEqual(Array.from({ length: 12 }, () => 408))
      expect(await metric(/^iip_mesh_request_errors_total\{direction="outbound",service="legacy",code="408",hop="outbound",reason="body_timeout"\}/)).toBe(12)
      expect(await metric(/^iip_mesh_endpoint_ejections_total\{service="legacy"/)).toBe(0)
    } finally {
      await own.run()
    }
  })

  it("a body too slow for the plain service says nothing of its endpoint: no latency sample, no failure, nothing left pending", async () => {
    const endpoint = () => upload.a.sidecar.registry.view().find((v) => v.service === "legacy")!.endpoints[0]!
    // A request answered first, so that the endpoint has a sample of its own.
    expect((await withTimeout(nodePost(cleanup, upload.a.outboundPort, Buffer.alloc(10, 7), false), 10_000, "a small call")).status).toBe(200)
    const before = endpoint()
    const head = `POST /upload HTTP/1.1\r\nhost: legacy\r\niip-timeout: ${DEADLINE_MS}\r\ntransfer-encoding: chunked\r\n\r\n100000\r\n`
    expect(statusOf(await withTimeout(trickleH1(cleanup, upload.a.outboundPort, head), 10_000, "the trickling call's answer"))).toBe(408)
    const after = endpoint()
    // The time the caller took over its body is not the endpoint's latency (a sample of ~300 ms, up to 4x its estimate).
    expect(after.samples).toBe(before.samples)
    expect(after.failures).toBe(before.failures)
    expect(after.pending).toBe(0)
  })

  it("a body slower than the per-try timeout but within the deadline still reaches the plain service, which gets its per-try time", async () => {
    const own = new Cleanup()
    try {
      // The service takes 50 ms, well within the 200 ms a try has; the body takes ~400 ms to come.
      const answerAfter = (length: number): Promise<string> => new Promise((resolve) => setTimeout(() => resolve(`got ${length}`), 50))
      const { a: slowTries, received: got } = await startPlainUpload(own, { "/upload": answerAfter }, 1, { perTryTimeoutMs: 200 })
      const answer = await withTimeout(slowChunkedH1(own, slowTries.outboundPort, 5_000, 20), 10_000, "the slow call's answer")
      expect(statusOf(answer)).toBe(200)
      expect(answer).toMatch(/\r\n\r\ngot 20$/)
      expect(got).toEqual([20])
    } finally {
      await own.run()
    }
  })

  it("trickling in over HTTP/2 ends at the request's deadline in 408 body_timeout, then RST_STREAM NO_ERROR", async () => {
    upload.received.length = 0
    upload.access.length = 0
    const outcome = await withTimeout(trickleH2(cleanup, upload.a.outboundPort), 10_000, "the trickling h2 call")
    expect(outcome.status).toBe(408)
    expect(outcome.reason).toBe("outbound; reason=body_timeout")
    expect(outcome.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR)
    expect(upload.received).toEqual([])
    expect(upload.access).toEqual([expect.objectContaining({ status: 408, error: { hop: "outbound", reason: "body_timeout" } })])
    // The caller keeps its session: the sidecar's stream closed all the same (the trickle's DATA past
    // the stop, left unread, kept it open and the request in flight for the session's life).
    await waitFor(() => upload.a.sidecar.inFlight() === 0, 5000, "the trickling h2 call to leave the sidecar")
  })
})
