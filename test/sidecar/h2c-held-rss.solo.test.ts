// B's RSS while one caller stalls hundreds of large gRPC server streams (src/sidecar/heldAnswers.ts):
// B in a process of its own (so its memory is measured alone, from /proc), at its defaults but for
// its app, a grpc-js app answering 64 KiB messages, and a hand-played mesh dialer that says hello
// with a stream window of one byte and never grants more: B sends each answer's first byte and holds
// the rest, ~320 KiB an answer (a 256 KiB stream window and a 64 KiB queue). Before, nothing bounded
// their sum: 300 answers held ~75 MiB more at B's peak. Now the default budget (32 MiB) holds it.
// Solo: it measures a process's memory and fills a few hundred MiB of socket buffers.
import * as grpc from "@grpc/grpc-js"
import { readFileSync } from "node:fs"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { encodeEnvelope, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { meshDialer } from "../support/budgetAttack.ts"
import { grpcMessage, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, frame, waitFor, withTimeout } from "../support/iipRaw.ts"
import { killIfRunning, portOf, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const MiB = 1024 * 1024
const CALLS = 300
const MESSAGE = Buffer.alloc(64 * 1024, 0x61)
const WATCH = rawMethod("demo.Feed", "Watch", false, true)

/** The process's resident memory now and at its peak (/proc: VmRSS, VmHWM), in bytes. */
const memoryOf = (pid: number): { rss: number; peak: number } => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024
  return { rss: kib("VmRSS"), peak: kib("VmHWM") }
}

describe("B's memory while one caller stalls many large h2c answers", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${CALLS} server streams nobody reads: B's peak RSS grows by no more than its 32 MiB budget and some slack`, { timeout: 120_000 }, async () => {
    // The app: each call streams 64 KiB messages until B's window stops it (or B resets it).
    const app = { started: 0, blocked: new Set<unknown>(), over: 0 }
    const server = new grpc.Server()
    server.addService({ Watch: WATCH }, {
      Watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        app.started++
        call.on("cancelled", () => {
          app.blocked.delete(call)
          app.over++
        })
        let sent = 0
        const pump = () => {
          app.blocked.delete(call)
          while (!call.cancelled && sent < 256) {
            sent++
            // Past four messages (more than B's window and queue), a wait for drain is B holding the rest.
            if (!call.write(MESSAGE)) return void (sent > 4 && app.blocked.add(call), call.once("drain", pump))
          }
          if (!call.cancelled) call.end()
        }
        pump()
      }
    })
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
    cleanup.add(() => server.forceShutdown())
    const b = spawnSidecarProcess(["--service", "feed", "--app", `127.0.0.1:${port}`, "--app-protocol", "h2c", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
    cleanup.add(async () => {
      killIfRunning(b.proc)
      await withTimeout(b.exited, 10_000, "B to exit")
    })
    const ready = await b.ready
    const pid = b.proc.pid!
    // A first call through (the method learned to stream, the session to the app open), then B's memory at rest.
    const dialer = await meshDialer(portOf(ready.inbound), cleanup, { streamWindow: 1 })
    const meta = new Map<string, string>()
      .set(HttpMeta.method, "POST")
      .set(HttpMeta.authority, "feed")
      .set(HttpMeta.headers, JSON.stringify([["content-type", "application/grpc"], ["te", "trailers"]]))
    const body = grpcMessage(Buffer.alloc(0))
    const ask = (channel: number) => dialer.write(frame(1, WATCH.path, channel, encodeEnvelope(EnvelopeKind.request, 0, channel, meta, body, 8192)))
    ask(1)
    await waitFor(() => app.blocked.size === 1, 20_000, "the first call to be held at B")
    const before = memoryOf(pid)
    for (let channel = 2; channel <= CALLS; channel++) ask(channel)
    await waitFor(() => app.started === CALLS && app.blocked.size + app.over >= CALLS, 60_000, `the ${CALLS} answers to be held at B or taken back`)
    const during = memoryOf(pid)
    console.log(`B: RSS at rest ${(before.rss / MiB).toFixed(1)} MiB, peak ${(during.peak / MiB).toFixed(1)} MiB (+${((during.peak - before.rss) / MiB).toFixed(1)}), taken back ${app.over} of ${CALLS}`)
    // Before: +75 MiB or more (no budget). Now the budget and what is not counted (socket read
    // buffers the views hold, the answers' objects, the h2 streams): within 32 + 24 MiB.
    expect(during.peak - before.rss).toBeLessThan(56 * MiB)
    expect(app.over).toBeGreaterThan(0)
  })
})
