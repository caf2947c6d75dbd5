// The inbound side's app client keeps the last checked head's lines (appRequestHead.ts's HeadLines) and
// writes the per-request headers (iip-timeout, traceparent) after them. These tests hold a head
// written from those kept lines to the same request sent unchecked, which is always built afresh:
// byte for byte on the app's socket (a raw TCP app on loopback), over a seeded run of requests that
// repeat, change one header, move or repeat a traceparent (seeded, replayable with
// APP_POOL_HEADS_SEED). An unchecked head is refused when its traceparent cannot be written, even
// when the rest matches the kept lines.
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { type AppController, AppPool, type AppPoolHandler } from "../../src/sidecar/appPool.ts"
import type { AppPoolRequest } from "../../src/sidecar/appRequestHead.ts"
import { prng } from "../helpers/prng.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const SEED = Number(process.env.APP_POOL_HEADS_SEED ?? 0x4ead)

/** An app that answers every request with an empty 200 and keeps each request's head as it came (latin1). */
const startRawApp = async (cleanup: Cleanup) => {
  const heads: Array<string> = []
  const server = net.createServer((socket) => {
    let pending = Buffer.alloc(0)
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk])
      for (;;) {
        const end = pending.indexOf("\r\n\r\n")
        if (end < 0) return
        const head = pending.subarray(0, end + 4).toString("latin1")
        const length = /\r\ncontent-length: (\d+)\r\n/.exec(head)
        const total = end + 4 + (length === null ? 0 : Number(length[1]))
        if (pending.length < total) return
        heads.push(head)
        pending = pending.subarray(total)
        socket.write("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as net.AddressInfo).port, heads }
}

/** One exchange to its end: whether it was answered, or the error's class name. */
const send = (pool: AppPool, request: AppPoolRequest): Promise<string> =>
  new Promise((resolve) => {
    const handler: AppPoolHandler = {
      onRequestStart: (_c: AppController) => {},
      onResponseStart: () => {},
      onResponseData: () => {},
      onResponseEnd: () => resolve("answered"),
      onResponseError: (_c, error) => resolve(error.constructor.name)
    }
    pool.dispatch(request, handler)
  })

describe("the app client's kept head lines", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("a checked head written from the kept lines is byte for byte the head built afresh, request after request", async () => {
    const app = await startRawApp(cleanup)
    const pool = new AppPool("127.0.0.1", app.port, 1)
    cleanup.add(() => pool.destroy())
    const rng = prng(SEED)
    const names = ["x-a", "x-b", "content-type", "traceparent", "tracestate", "iip-timeout", "host", "Traceparent", "x-iip-mesh-client-id"]
    const valueOf = () => rng.pick(["1", "2", "", "v w", "caf\u00e9", `00-${rng.bytes(16).toString("hex")}-${rng.bytes(8).toString("hex")}-01`])
    let method = "POST"
    let path = "/"
    let headers: Array<string> = []
    await withTimeout((async () => {
      for (let i = 0; i < 1500; i++) {
        const roll = rng.next()
        if (roll < 0.1) {
          method = rng.pick(["GET", "POST", "PUT"])
          path = rng.pick(["/", "/a", "/b?q=1"])
          headers = Array.from({ length: rng.int(0, 6) }, () => [rng.pick(names), valueOf()]).flat()
        } else if (roll < 0.4 && headers.length > 0) {
          // One header's value changed (a per-request one, mostly: the case the kept lines serve).
          const at = 2 * rng.int(0, headers.length / 2 - 1)
          headers = headers.slice()
          headers[at + 1] = valueOf()
        } else if (roll < 0.5) {
          // A traceparent added somewhere, or a second one.
          const at = 2 * rng.int(0, headers.length / 2)
          headers = [...headers.slice(0, at), "traceparent", valueOf(), ...headers.slice(at)]
        }
        const body = Buffer.from(rng.pick(["", "x", "body"]))
        const request: AppPoolRequest = { method, path, headers, body, checked: true }
        const kept = await send(pool, request)
        const { checked: _, ...unchecked } = request
        const fresh = await send(pool, unchecked)
        const context = `seed ${SEED}, request ${i}, ${JSON.stringify(request)}`
        expect(kept, context).toBe(fresh)
        if (kept !== "answered") continue
        const [keptHead, freshHead] = app.heads.splice(0, 2)
        expect(keptHead, context).toBe(freshHead)
        // Each traceparent the request carries reaches the app once, and no other header line.
        const lines = keptHead!.split("\r\n").slice(1, -2)
        const sent = (name: string) => headers.filter((n, at) => at % 2 === 0 && n === name).length
        expect(lines.filter((line) => line.startsWith("traceparent: ")).length, context).toBe(sent("traceparent"))
        expect(lines.filter((line) => line.startsWith("iip-timeout: ")).length, context).toBe(sent("iip-timeout"))
        expect(lines.length, context).toBe(headers.length / 2 + (sent("host") === 0 ? 1 : 0) + 1 + (lines.some((l) => l.startsWith("content-length: ")) ? 1 : 0))
      }
    })(), 60_000, "1500 request pairs")
  })

  it("an unchecked head whose traceparent cannot be written is refused, though the rest matches the kept lines", async () => {
    const app = await startRawApp(cleanup)
    const pool = new AppPool("127.0.0.1", app.port, 1)
    cleanup.add(() => pool.destroy())
    const base = ["x-a", "1", "host", "svc"]
    expect(await send(pool, { method: "GET", path: "/", headers: [...base, "traceparent", "00-1-2-01"], body: Buffer.alloc(0), checked: true })).toBe("answered")
    for (const value of ["00-1-2-01\r\nx-evil: 1", "00\n", "\u0000", "\u0100"]) {
      expect(await send(pool, { method: "GET", path: "/", headers: [...base, "traceparent", value], body: Buffer.alloc(0) }), JSON.stringify(value)).toBe("InvalidRequestHead")
    }
    expect(await send(pool, { method: "GET", path: "/", headers: [...base, "iip-timeout", "5\r\nx-evil: 1"], body: Buffer.alloc(0) })).toBe("InvalidRequestHead")
    expect(app.heads.length).toBe(1)
  })
})
