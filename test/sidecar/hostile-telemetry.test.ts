// Hostile input aimed at the telemetry of a sidecar pair: the calling app and the far app choose
// values that end up in metric labels, span attributes and trace headers. A caller -> A ("store")
// -> IIP -> B ("catalog") -> far app; the far app answers whatever status, x-iip-mesh-error and
// grpc-message the query asks for. Checked: hundreds of distinct hosts, paths, methods and status
// codes do not make as many series (/metrics stays the same size once the caps are reached); a Host
// with quotes, backslashes or non-ASCII (no authority) and one longer than a DNS name are refused
// (400) before they become a label, one of a reg-name's odd characters keeps /metrics parseable; trace headers oversize, repeated, malformed, non-ASCII
// or with control characters are answered, never reach the far app raw (one traceparent, a bounded
// tracestate and baggage, no control character); the spans a store keeps hold bounded attributes
// (url.path cut to 2048, a gRPC path past it no rpc.service or rpc.method); /traces?limit is clamped.
import * as http from "node:http"
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { parsePrometheusText } from "../support/prometheusText.ts"
import { call, type EchoedRequest, type RunningSidecar, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** The far app: echoes what it got, with the status, x-iip-mesh-error and grpc-message the query names. */
const hostileFar: http.RequestListener = (req, res) => {
  req.resume()
  req.on("end", () => {
    const query = new URLSearchParams((req.url ?? "").split("?")[1] ?? "")
    const body = JSON.stringify({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, rawHeaders: req.rawHeaders, body: "" } satisfies EchoedRequest)
    const headers: http.OutgoingHttpHeaders = { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
    const meshError = query.get("m")
    if (meshError !== null) headers["x-iip-mesh-error"] = meshError
    const grpcMessage = query.get("g")
    if (grpcMessage !== null) headers["grpc-message"] = grpcMessage
    res.writeHead(Number(query.get("s") ?? "200"), headers)
    res.end(body)
  })
}

/**
 * Sends one raw request head (and reads the answer to its end: the sidecar closes or answers with a
 * length). A head the sidecar refuses part way (431) is answered, then read no further: the rest of
 * it fails to go (EPIPE, or a reset) once it no longer fits the kernel's buffers (60 KB heads, 4 KiB
 * buffers). The answer read by then is the result (none: status 0).
 */
const rawCall = (port: number, head: string): Promise<{ readonly status: number; readonly text: string }> =>
  new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1")
    const parts: Array<Buffer> = []
    socket.setTimeout(10_000, () => socket.destroy(new Error("no answer in 10 s")))
    socket.on("data", (chunk: Buffer) => {
      parts.push(chunk)
      const text = Buffer.concat(parts).toString("latin1")
      const end = text.indexOf("\r\n\r\n")
      if (end === -1) return
      const length = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))
      if (length !== null && text.length >= end + 4 + Number(length[1])) socket.end()
    })
    socket.on("error", () => {})
    socket.on("close", () => {
      const text = Buffer.concat(parts).toString("latin1")
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text })
    })
    socket.write(head, "latin1")
  })

/** Methods the listener's parser takes (an unknown token is answered 400 before any telemetry sees it). */
const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "PURGE", "SEARCH", "MKCOL"]

/** Runs `count` calls, `width` at a time. */
const flood = async (count: number, width: number, one: (i: number) => Promise<unknown>): Promise<void> => {
  let next = 0
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < count) await one(next++)
  }))
}

const scrape = async (admin: string): Promise<string> => (await fetch(`${admin}/metrics`)).text()

/** The mesh's own series lines (the process metrics' depend on the heap, not on the requests). */
const meshSeries = (text: string): Array<string> => text.split("\n").filter((line) => line.startsWith("iip_mesh_"))

describe("telemetry under hostile callers and a hostile far app", () => {
  const cleanup = new Cleanup()
  let a: RunningSidecar
  let b: RunningSidecar
  let adminA: string
  let adminB: string

  beforeAll(async () => {
    const far = await startApp(cleanup, hostileFar)
    b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: far.address }))
    a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    adminA = await startAdmin(cleanup, a)
    adminB = await startAdmin(cleanup, b)
  })
  afterAll(() => cleanup.run())

  it("the spans the stores keep hold bounded attributes; /traces?limit is clamped", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
    const path = `/${"p".repeat(2040)}`
    const answer = await call(a.outboundPort, {
      path: `${path}?s=503&m=${encodeURIComponent(`app; reason=${"r".repeat(3000)}`)}&g=${"G".repeat(3000)}`,
      headers: { host: "catalog", traceparent: `00-${traceId}-00f067aa0ba902b7-01`, "user-agent": "u".repeat(7000), "content-type": "application/grpc" }
    })
    // A gRPC call's failure is a 200 with grpc-status.
    expect([200, 414, 503]).toContain(answer.status)
    let seen = 0
    for (const admin of [adminA, adminB]) {
      const response = await fetch(`${admin}/traces/${traceId}`)
      if (response.status === 404) continue
      const trace = await response.json() as { readonly spans: ReadonlyArray<{ readonly attributes: Record<string, unknown>; readonly statusMessage?: string }> }
      seen += trace.spans.length
      for (const span of trace.spans) {
        expect(Object.keys(span.attributes).length).toBeLessThanOrEqual(32)
        for (const value of Object.values(span.attributes)) expect(String(value).length).toBeLessThanOrEqual(2100)
        expect((span.statusMessage ?? "").length).toBeLessThanOrEqual(300)
      }
    }
    expect(seen).toBeGreaterThan(0)
    // A path past IIP's 2048 bytes is answered 414, but A's client span has begun: its url.path is cut.
    const longId = "5bf92f3577b34da6a3ce929d0e0e4736"
    expect((await call(a.outboundPort, { path: `/${"q".repeat(12_000)}`, headers: { host: "catalog", traceparent: `00-${longId}-00f067aa0ba902b7-01` } })).status).toBe(414)
    const long = await (await fetch(`${adminA}/traces/${longId}`)).json() as { readonly spans: ReadonlyArray<{ readonly attributes: Record<string, unknown> }> }
    expect(long.spans.map((span) => String(span.attributes["url.path"]).length)).toStrictEqual([2048])
    // So is a gRPC call's: its rpc.service and rpc.method come from the same path (main kept 12,000 characters of it).
    const grpcId = "6bf92f3577b34da6a3ce929d0e0e4736"
    const grpcPath = `/pkg.Svc/${"m".repeat(12_000)}`
    // Refused as the 414 is (a gRPC failure is a 200 with grpc-status).
    expect([200, 414]).toContain((await call(a.outboundPort, { path: grpcPath, headers: { host: "catalog", traceparent: `00-${grpcId}-00f067aa0ba902b7-01`, "content-type": "application/grpc" } })).status)
    const grpc = await (await fetch(`${adminA}/traces/${grpcId}`)).json() as { readonly spans: ReadonlyArray<{ readonly attributes: Record<string, unknown> }> }
    expect(grpc.spans.length).toBe(1)
    for (const value of Object.values(grpc.spans[0]!.attributes)) expect(String(value).length).toBeLessThanOrEqual(2048)
    for (const limit of ["1e400", "-5", "abc", "999999999", "1".repeat(5000)]) {
      const response = await fetch(`${adminA}/traces?limit=${limit}`)
      expect(response.status).toBe(200)
      expect(((await response.json()) as { traces: Array<unknown> }).traces.length).toBeLessThanOrEqual(1000)
    }
  }, 30_000)

  it("label values a caller spells with quotes, backslashes, non-ASCII or at any length keep /metrics well-formed and its size bounded", async () => {
    const before = (await scrape(adminA)).length
    // A Host that is no authority (RFC 9112 §3.2) is refused 400 before it names a service; one of
    // every character a reg-name may hold besides letters and digits is a service nobody serves.
    for (const host of ['a"b', "a\\b", "caf\u00e9", "\u00ff\u00fe", "a{b}=c,d"]) {
      expect((await rawCall(a.outboundPort, `GET /q HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`)).status, host).toBe(400)
    }
    const oddName = "a'(b)*+,;=!$&-_~%22"
    expect((await rawCall(a.outboundPort, `GET /q HTTP/1.1\r\nhost: ${oddName}\r\nconnection: close\r\n\r\n`)).status).toBe(503)
    // 50 distinct Host values of 8,000 characters: no service has a name that long (DNS: 253).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
    await flood(50, 8, async (i) => {
      expect((await call(a.outboundPort, { agent, path: "/q", headers: { host: `${i}-${"x".repeat(8000)}` } })).status).toBe(400)
    })
    agent.destroy()
    const text = await scrape(adminA)
    // Parses (the format's escapes)...
    const families = parsePrometheusText(text)
    const services = new Set([...families.values()].flatMap((family) => family.samples.map((sample) => sample.labels.service ?? sample.labels.callee ?? "")))
    expect([...services].filter((name) => name.length > 253)).toStrictEqual([])
    expect(services).toContain(oddName.toLowerCase())
    // ...and the 50 long names added nothing like 50 x 8 KB per series line.
    expect(text.length - before).toBeLessThan(200_000)
  })

  it("caller-chosen hosts, paths and methods and far-app status codes and error reasons make a bounded number of series", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 })
    // Distinct values each time: a path, a status code, a mesh error reason; methods past the usual ones.
    const round = async (from: number, count: number) =>
      flood(count, 32, async (j) => {
        const i = from + j
        const status = 200 + 2 * i
        if (i < 200) {
          const r = await call(a.outboundPort, {
            agent,
            method: METHODS[i % METHODS.length],
            path: `/u/${i}/item-${i.toString(36)}x?s=${status}&m=${encodeURIComponent(`app; reason=r${i}`)}&g=${encodeURIComponent(`msg ${i}`)}`,
            headers: { host: "catalog", "user-agent": `agent-${i}` }
          })
          expect(r.status).toBe(status)
        }
        // An unknown service named by the Host header: answered by A without a peer.
        await call(a.outboundPort, { agent, path: `/x${i}`, headers: { host: `svc-${i}` } })
      })
    // Past the 500 services a sidecar gives series of their own (outbound series and its edges), new names share `_other`.
    await round(0, 600)
    const [a1, b1] = [meshSeries(await scrape(adminA)), meshSeries(await scrape(adminB))]
    await round(600, 100)
    const [a2, b2] = [meshSeries(await scrape(adminA)), meshSeries(await scrape(adminB))]
    agent.destroy()
    // The next 100 distinct values add no series.
    expect({ a: a2.length, b: b2.length }).toStrictEqual({ a: a1.length, b: b1.length })
    const values = (lines: ReadonlyArray<string>, label: string) => new Set(lines.flatMap((l) => new RegExp(`[{,]${label}="([^"]*)"`).exec(l)?.[1] ?? []))
    expect(values(a2, "service").size).toBeLessThanOrEqual(502)
    expect(values(a2, "callee").size).toBeLessThanOrEqual(501)
    expect(values(a2, "service")).toContain("_other")
    expect(values(a2, "callee")).toContain("_other")
  }, 30_000)

  it("trace headers oversize, repeated, malformed, non-ASCII or with control characters: answered, and passed on bounded or not at all", async () => {
    const valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    const heads: Array<Array<string>> = [
      Array.from({ length: 1000 }, (_, i) => `traceparent: 00-${i.toString(16).padStart(32, "1")}-b7ad6b7169203331-01`),
      [`traceparent: ${valid}`, ...Array.from({ length: 1000 }, (_, i) => `tracestate: k${i}=v${i}`)],
      [`traceparent: ${valid}`, `tracestate: ${Array.from({ length: 300 }, (_, i) => `k${i}=${"v".repeat(250)}`).join(",")}`.slice(0, 60_000)],
      [`traceparent: ${valid}`, ...Array.from({ length: 1000 }, (_, i) => `baggage: k${i}=${"v".repeat(40)}`)],
      [`traceparent: ${valid}`, `baggage: ${"k=".padEnd(60_000, "v")}`],
      [`traceparent: ${valid.slice(0, 54)}\u00ff\u00fe`, `tracestate: k=\u00e9\u00ff`, `baggage: k=\u00e9\u00ff`],
      [`traceparent: ${valid}\u0001`, `tracestate: k=v\u0001`, `baggage: k=v\u0007`],
      [`traceparent: ${"f".repeat(60_000)}`],
      [`traceparent: 00-${"0".repeat(32)}-${"0".repeat(16)}-01`, "tracestate: =,=,,==", "baggage: ;;;==,,=;"],
      [`traceparent: ${valid}-${"x".repeat(5000)}`, `b3: ${"z".repeat(5000)}`, `x-request-id: ${"r".repeat(5000)}`]
    ]
    for (const lines of heads) {
      const answer = await rawCall(a.outboundPort, `GET /t HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n${lines.join("\r\n")}\r\n\r\n`)
      expect([200, 400, 431], lines[0]!.slice(0, 80)).toContain(answer.status)
      if (answer.status !== 200) continue
      const far = JSON.parse(answer.text.slice(answer.text.indexOf("\r\n\r\n") + 4)) as EchoedRequest
      const got = (name: string) => far.rawHeaders.filter((_, i) => i % 2 === 1 && far.rawHeaders[i - 1]!.toLowerCase() === name)
      expect(got("traceparent")).toHaveLength(1)
      expect(got("traceparent")[0]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
      expect(got("tracestate").length).toBeLessThanOrEqual(1)
      expect((got("tracestate")[0] ?? "").split(",").length).toBeLessThanOrEqual(32)
      expect(got("baggage").length).toBeLessThanOrEqual(1)
      expect(Buffer.byteLength(got("baggage")[0] ?? "")).toBeLessThanOrEqual(8192)
      for (const value of [...got("traceparent"), ...got("tracestate"), ...got("baggage")]) expect(value).not.toMatch(/[\u0000-\u001f\u007f-\uffff]/)
    }
    // Both still serve.
    expect((await call(a.outboundPort, { path: "/after" })).status).toBe(200)
  }, 30_000)

})
