// What an h2c caller's request bodies can make A's outbound listener hold when nothing reads them
// (the far endpoint frozen: it takes the connection and never answers, so no request goes on and no
// body is consumed). HTTP/2's flow control is the only brake: A holds what its windows let the
// caller send. A caller that opens 16 streams and sends all it is allowed was let send 12 MiB per
// connection (an 8 MiB connection window, given back as DATA arrived until 4 MiB were held): 100
// such connections took A from 67 to 852 MB of RSS and its /health past 1 s (black box, two
// sidecars as processes). An HTTP/1.1 caller is paused past 64 KiB held. Now a connection holds at
// most 2 MiB (1 MiB window, given back up to 1 MiB held: Go's server allows 1 MiB a connection).
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Flag, frame, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, requestBlock } from "../helpers/h2RawClient.ts"
import { Cleanup, startRawServer } from "../support/iipRaw.ts"
import { sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1 << 20
const STREAMS = 16
const FRAME = 16_384
const INITIAL_WINDOW = 65_535

describe("an h2c caller's request bodies that nothing reads", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${STREAMS} streams sending all their windows allow: A takes at most 2 MiB of them on one connection`, async () => {
    const frozen = await startRawServer(cleanup, (socket: net.Socket) => socket.on("error", () => {}))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: `127.0.0.1:${frozen.port}`, weight: 1 }] } }))
    const heads = Array.from({ length: STREAMS }, (_, i) =>
      frame(Type.headers, Flag.endHeaders, 2 * i + 1, requestBlock("POST", `/up/${i}`, [["content-type", "application/octet-stream"], ["iip-timeout", "20000"]]))
    )
    const raw = await connectRawH2(cleanup, a.outboundPort, true, Buffer.concat(heads))
    // The windows A grants, read from its frames as they come: SETTINGS_INITIAL_WINDOW_SIZE and WINDOW_UPDATEs.
    let read = 0
    let connectionWindow = INITIAL_WINDOW
    let streamInitial = INITIAL_WINDOW
    const streamWindow = new Map<number, number>()
    const take = () => {
      for (; read < raw.frames.length; read++) {
        const f = raw.frames[read]!
        if (f.type === Type.settings && (f.flags & Flag.ack) === 0)
          for (let at = 0; at + 6 <= f.payload.length; at += 6) if (f.payload.readUInt16BE(at) === 4) streamInitial = f.payload.readUInt32BE(at + 2)
        if (f.type === Type.windowUpdate && f.stream === 0) connectionWindow += f.payload.readUInt32BE(0)
        if (f.type === Type.windowUpdate && f.stream !== 0) streamWindow.set(f.stream, (streamWindow.get(f.stream) ?? 0) + f.payload.readUInt32BE(0))
      }
    }
    let sent = 0
    const sentOn = new Map<number, number>()
    const chunk = Buffer.alloc(FRAME, 0x61)
    for (let round = 0; round < 1000; round++) {
      take()
      const frames: Array<Buffer> = []
      for (let i = 0; i < STREAMS; i++) {
        const id = 2 * i + 1
        let room = Math.min(connectionWindow - sent, streamInitial + (streamWindow.get(id) ?? 0) - (sentOn.get(id) ?? 0))
        while (room > 0) {
          const n = Math.min(room, FRAME)
          frames.push(frame(Type.data, 0, id, chunk.subarray(0, n)))
          sent += n
          sentOn.set(id, (sentOn.get(id) ?? 0) + n)
          room -= n
        }
      }
      // A PING after the DATA: its ACK comes once A read all of it, with the window it gave back for it.
      const pings = raw.frames.filter((f) => f.type === Type.ping).length
      raw.socket.write(Buffer.concat([...frames, frame(Type.ping, 0, 0, Buffer.alloc(8, round & 0xff))]))
      await raw.until((all) => all.filter((f) => f.type === Type.ping).length > pings, "the PING's ACK")
      expect(raw.isClosed()).toBe(false)
      if (frames.length === 0) break
    }
    take()
    expect(sent).toBeGreaterThan(MiB)
    expect(sent).toBeLessThanOrEqual(2 * MiB)
  })
})
