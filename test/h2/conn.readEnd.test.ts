// H2ConnectionCore.atReadEnd: work a handler leaves for the end of the read it came in, which the
// sidecar's h2 legs use to decide a held body and send a request on (outboundH2Call.ts) and to begin
// an answer's wait (appH2Exchange.ts). It must run once every frame of the read was parsed (a
// RST_STREAM behind the request's END_STREAM seen: rapid reset), and still in the read's callback:
// from the check phase, where a setImmediate ran it before, a write on a TLS socket cost sidecar A
// a turn of the loop more per call (node completes the write through an immediate of its own).
import { performance } from "node:perf_hooks"
import { afterEach, describe, expect, it } from "vitest"
import type { H2ServerHandler } from "../../src/h2/h2Connection.ts"
import { listenH2 } from "../helpers/h2ConnLegs.ts"
import { connectRawH2, headerFrames, requestBlock } from "../helpers/h2RawClient.ts"
import { ErrorCode, Flag, frame, Type } from "../helpers/h2Wire.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const loopTurn = (): number => performance.nodeTiming.uvMetricsInfo.loopCount

interface Seen {
  events: Array<string>
  /** Per work run: the events before it, whether the immediate queued with it had run, the same loop turn. */
  runs: Array<{ before: Array<string>; immediateRan: boolean; sameTurn: boolean }>
  outside: Array<boolean>
}

const startServer = (seen: Seen): Promise<number> =>
  listenH2(cleanup, (connectionOf) => {
    const handler: H2ServerHandler = {
      onRequest(stream) {
        const connection = connectionOf()
        seen.events.push(`request:${stream.id}`)
        const turn = loopTurn()
        let immediateRan = false
        setImmediate(() => {
          immediateRan = true
          // Outside a read: the connection says so, and keeps nothing.
          seen.outside.push(connection.atReadEnd({ atReadEnd: () => seen.events.push("outside-ran") }))
        })
        const queued = connection.atReadEnd({
          atReadEnd: () => seen.runs.push({ before: [...seen.events], immediateRan, sameTurn: loopTurn() === turn })
        })
        seen.events.push(`queued:${queued}`)
      },
      onData: (stream, chunk, end) => {
        connectionOf().consumed(stream, chunk.length)
        if (end) seen.events.push(`end:${stream.id}`)
      },
      onTrailers: () => {},
      onReset: (stream, code) => seen.events.push(`reset:${stream.id}:${code}`),
      onEnd: () => {},
      onWritable: () => {},
      onClose: () => {}
    }
    return handler
  })

describe("H2Connection.atReadEnd", () => {
  it("runs once the whole read is parsed (a RST_STREAM behind END_STREAM seen), in the read's own turn, before the turn's immediates; false outside a read", async () => {
    const seen: Seen = { events: [], runs: [], outside: [] }
    const port = await startServer(seen)
    // One write, so one read at the server: the request's HEADERS, its body's END_STREAM, then its reset.
    const first = Buffer.concat([
      headerFrames(1, requestBlock("POST", "/x.Y/Z"), false),
      frame(Type.data, Flag.endStream, 1, Buffer.from("hello")),
      frame(Type.rst, 0, 1, Buffer.from([0, 0, 0, ErrorCode.cancel]))
    ])
    await connectRawH2(cleanup, port, true, first)
    await untilTurn(() => seen.outside.length > 0, "the immediate queued with the work")
    expect(seen.runs).toStrictEqual([{ before: ["request:1", "queued:true", "end:1", `reset:1:${ErrorCode.cancel}`], immediateRan: false, sameTurn: true }])
    expect(seen.outside).toStrictEqual([false])
    expect(seen.events).not.toContain("outside-ran")
  })
})
