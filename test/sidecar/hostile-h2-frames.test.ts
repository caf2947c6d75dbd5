// Raw HTTP/2 frames to the outbound listener (outboundH2.ts), written byte by byte here (no
// HTTP/2 library in the client: node's own refuses to send most of them): what no well-behaved
// client sends, to see that it never reaches the HTTP/1.1 app leg as a header, a request line or
// framing, and that floods end the connection, not the sidecar.
// - a name in upper case, connection-specific headers (connection, transfer-encoding, keep-alive,
//   upgrade), a :path holding a second request line: the stream is refused (nghttp2, or B's
//   request-target check); a name or value with CR, LF or NUL is dropped by nghttp2, its request
//   going on without it: the app never sees a smuggled header or request;
// - a PING flood whose ACKs are not read: the session is ended, or (small socket buffers) the
//   sidecar stops reading it; a CONTINUATION flood (CVE-2024-27983's kind): the session is ended
//   with GOAWAY; the sidecar goes on serving;
// - an HPACK bomb is reset ENHANCE_YOUR_CALM before the app; SETTINGS (ACKs unread) and PRIORITY
//   floods end the session (SETTINGS, with small socket buffers: the sidecar stops reading it), a
//   WINDOW_UPDATE flood costs nothing;
// - 150 streams opened at once past --h2-max-streams 4 (requests the app holds): 146 refused,
//   4 reach the app.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Flag, type Frame, hpackInt, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, literal, requestBlock, streamOver } from "../helpers/h2RawClient.ts"
import { h2Frame } from "../support/h2Raw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { call, echoRequest, type Mesh, startMesh } from "../support/sidecarHarness.ts"

/** A GET's head for `path` and `extra` fields, every field a literal (h2RawClient.ts): any bytes at all. */
const request = (path: string, extra: ReadonlyArray<readonly [string, string]> = []): Buffer => requestBlock("GET", path, extra)

/** A flood with none of it taken for this long after the last part taken counts as no longer read. */
const STOPPED_MS = 1000

/**
 * Writes `flood` (frames of `frameBytes`) on `socket` in parts of 1,000 frames (the same bytes, in
 * order; one callback each, as the kernel takes the part) and resolves with what ends it: "taken" (the last
 * part taken: the sidecar read it all), "closed" (the connection closed), or "stopped" (no part
 * taken for STOPPED_MS after the one before: the sidecar stopped reading). No polling: the events
 * decide, and the one timer, armed again by each part taken, only says that none came. The sidecar
 * runs in this process: that timer fires after turns of the event loop in which it could have read,
 * so no progress is its choice, not a slow machine's.
 */
const writeFlood = (socket: net.Socket, isClosed: () => boolean, flood: Buffer, frameBytes: number, what: string): Promise<"taken" | "closed" | "stopped"> =>
  withTimeout(
    new Promise((resolve) => {
      let quiet: NodeJS.Timeout | undefined
      let over = false
      const end = (verdict: "taken" | "closed" | "stopped") => {
        over = true
        clearTimeout(quiet)
        socket.off("close", onClose)
        resolve(verdict)
      }
      const onClose = () => end("closed")
      const progress = () => {
        clearTimeout(quiet)
        quiet = setTimeout(() => end("stopped"), STOPPED_MS)
      }
      if (isClosed()) return end("closed")
      socket.once("close", onClose)
      const part = 1000 * frameBytes
      let left = Math.ceil(flood.length / part)
      progress()
      for (let at = 0; at < flood.length; at += part) {
        // A callback with an error: the socket was destroyed, its close settles it.
        socket.write(flood.subarray(at, at + part), (error) => {
          // A part taken after the verdict ("stopped", then read again) arms nothing: a timer left for the next test otherwise.
          if (over || (error !== undefined && error !== null)) return
          if (--left === 0) end("taken")
          else progress()
        })
      }
    }),
    20_000,
    what
  )

/** A GET on a session of node's own client: its status. */
const requestOnNewSession = (cleanup: Cleanup, port: number): Promise<number> => {
  const session = http2.connect(`http://127.0.0.1:${port}`)
  cleanup.add(() => session.destroy())
  return withTimeout(
    new Promise<number>((resolve, reject) => {
      const s = session.request({ ":path": "/after", ":authority": "catalog" })
      s.on("response", (head) => resolve(Number(head[":status"])))
      s.on("error", reject)
      s.resume()
    }),
    2000,
    "a request on a new session"
  )
}

describe("raw HTTP/2 frames on the outbound listener", () => {
  let cleanup: Cleanup
  let mesh: Mesh
  beforeEach(async () => {
    cleanup = new Cleanup()
    mesh = await startMesh(cleanup, echoRequest)
  })
  afterEach(() => cleanup.run())

  it("a header or pseudo-header that would smuggle into HTTP/1.1 never reaches the app; the session serves a clean request after", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    const evil: ReadonlyArray<ReadonlyArray<readonly [string, string]>> = [
      [["x-evil", "a\r\nx-injected: 1"]],
      [["x-evil", "a\nx-injected: 1"]],
      [["x-evil", "a\0b"]],
      [["X-Upper", "v"]],
      [["connection", "keep-alive"]],
      [["transfer-encoding", "chunked"]],
      [["keep-alive", "timeout=5"]],
      [["upgrade", "websocket"]],
      [["x-evil\r\nx-injected", "1"]]
    ]
    let stream = 1
    for (const fields of evil) {
      raw.socket.write(h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, stream, request(`/evil${stream}`, fields)))
      await raw.until(streamOver(stream), `stream ${stream} to end`)
      stream += 2
    }
    // A :path that would be a second request line: refused before the app (B's request-target check) or by nghttp2.
    raw.socket.write(h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, stream, request("/a HTTP/1.1\r\nhost: catalog\r\n\r\nGET /smuggled")))
    await raw.until(streamOver(stream), "the request-line stream to end")
    stream += 2
    raw.socket.write(h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, stream, request("/clean", [["x-fine", "yes"]])))
    await raw.until(streamOver(stream), "the clean request's answer")
    expect(raw.isClosed()).toBe(false)
    // Every one of them is a malformed request (RFC 9113 §8.2.1, §8.2.2): src/h2 refuses its stream
    // (RST_STREAM PROTOCOL_ERROR). nghttp2 dropped a field holding CR, LF or NUL and let its request
    // through without it; the app saw those requests, never the field.
    expect(mesh.app.seen.map((r) => r.url)).toEqual(["/clean"])
    for (const seen of mesh.app.seen) {
      expect(seen.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase())).not.toContain("x-evil")
      expect(seen.headers["x-injected"]).toBeUndefined()
      expect(seen.rawHeaders.join("")).not.toMatch(/[\r\n\0]/)
    }
    expect(mesh.app.seen.at(-1)!.headers["x-fine"]).toBe("yes")
  })

  it("a PING flood whose ACKs are not read ends the session or stops being read; the sidecar goes on serving", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    // The client reads nothing while it floods, as an attacker would not: read along, the ACKs
    // drain as they come, and with small socket buffers (4 KiB) no queue ever fills. Unread, the
    // sidecar either reads a burst big enough to fill nghttp2's queue of unsent control frames
    // (the session ends) or, its ACK writes stalled, stops reading (node's HTTP/2 takes no input
    // while its output waits): bounded both ways. Never both bursts taken and the session left open.
    raw.socket.pause()
    const ping = h2Frame(Type.ping, 0, 0, Buffer.alloc(8))
    // Two bursts of 20,000.
    const flood = Buffer.concat(Array.from({ length: 40_000 }, () => ping))
    const verdict = await writeFlood(raw.socket, raw.isClosed, flood, ping.length, "the sidecar to take the pings, end the session, or stop reading")
    if (verdict !== "stopped") {
      raw.socket.resume()
      await raw.until((frames) => frames.some((f) => f.type === Type.goaway), "the GOAWAY")
    }
    const answer = await call(mesh.a.outboundPort, { path: "/after", timeoutMs: 2000 })
    expect(answer.status).toBe(200)
  })

  it("an HPACK bomb (one 4,000-byte value indexed once, then referenced 12,000 times: 48 MB of header list in 12 KB) is refused; the app sees nothing, the session serves a clean request", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    const value = "b".repeat(4000)
    // A literal with incremental indexing (RFC 7541 6.2.1): dynamic table index 62; then 0xBE, "indexed field 62", again and again.
    const bomb = Buffer.concat([request("/bomb"), Buffer.from([0x40, 3, ...Buffer.from("x-b"), ...hpackInt(value.length, 7, 0), ...Buffer.from(value)]), Buffer.alloc(12_000, 0xbe)])
    const heapBefore = process.memoryUsage().heapUsed
    raw.socket.write(h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, 1, bomb))
    await raw.until(streamOver(1), "the bomb's stream to end")
    const reset = raw.frames.find((f) => f.type === Type.rst && f.stream === 1)
    expect(reset?.payload.readUInt32BE(0)).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM)
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(16e6)
    raw.socket.write(h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, 3, request("/clean")))
    await raw.until(streamOver(3), "the clean request's answer")
    expect(mesh.app.seen.map((r) => r.url)).toEqual(["/clean"])
    expect(await requestOnNewSession(cleanup, mesh.a.outboundPort)).toBe(200)
  })

  it("SETTINGS (ACKs unread) and PRIORITY floods of 20,000 frames end the session with a GOAWAY (SETTINGS: or stop being read); the sidecar goes on serving", async () => {
    // Node 24's nghttp2: the SETTINGS flood INTERNAL_ERROR (its queue of unsent ACKs full), the PRIORITY one ENHANCE_YOUR_CALM.
    const floods = [["SETTINGS", h2Frame(Type.settings, 0, 0, Buffer.from([0, 4, 0, 1, 0, 0]))], ["PRIORITY", h2Frame(Type.priority, 0, 1, Buffer.from([0, 0, 0, 0, 15]))]] as const
    for (const [name, frame] of floods) {
      const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
      raw.socket.pause()
      const verdict = await writeFlood(raw.socket, raw.isClosed, Buffer.concat(Array.from({ length: 20_000 }, () => frame)), frame.length, `the sidecar to take the ${name} flood, end the session, or stop reading`)
      if (verdict !== "stopped") {
        raw.socket.resume()
        await raw.until((frames) => frames.some((f) => f.type === Type.goaway), `the GOAWAY after the ${name} flood`)
      } else {
        // Small socket buffers (4 KiB): the unread ACKs stall the sidecar's writes and it stops
        // reading (as for PINGs), bounded too; read again, the ACKs drain and no flood is seen.
        // PRIORITY frames are not answered: nothing stalls, they must end the session.
        expect(name, "the sidecar stopped reading a flood it answers nothing to").toBe("SETTINGS")
      }
      raw.socket.destroy()
      expect(await requestOnNewSession(cleanup, mesh.a.outboundPort)).toBe(200)
    }
  })

  // nghttp2 took such a flood at no cost; src/h2 counts WINDOW_UPDATEs under 128 bytes against a
  // budget (h2Guards.ts tinyWindowUpdates: each costs a frame for almost no data) and ends the session.
  it("a WINDOW_UPDATE flood (20,000 increments of 1) ends the session (GOAWAY ENHANCE_YOUR_CALM tiny-window-updates); a new session is served", async () => {
    const increment = Buffer.alloc(4)
    increment.writeUInt32BE(1)
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    raw.socket.write(Buffer.concat(Array.from({ length: 20_000 }, () => h2Frame(Type.windowUpdate, 0, 0, increment))))
    await raw.until((frames) => frames.some((f) => f.type === Type.goaway), "the GOAWAY")
    const goaway = raw.frames.find((f) => f.type === Type.goaway)!
    expect({ code: goaway.payload.readUInt32BE(4), debug: goaway.payload.subarray(8).toString() }).toEqual({ code: http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, debug: "tiny-window-updates" })
    expect(await requestOnNewSession(cleanup, mesh.a.outboundPort)).toBe(200)
  })

  it("a CONTINUATION flood (a header block that never ends) ends the session; the sidecar goes on serving", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    raw.socket.write(h2Frame(Type.headers, 0, 1, request("/cont")))
    const continuation = h2Frame(Type.continuation, 0, 1, literal("x-pad", "p".repeat(100)))
    for (let i = 0; i < 200 && !raw.isClosed(); i++) raw.socket.write(continuation)
    await raw.until((frames) => frames.some((f) => f.type === Type.goaway), "the GOAWAY")
    expect(mesh.app.seen).toEqual([])
    expect(await requestOnNewSession(cleanup, mesh.a.outboundPort)).toBe(200)
  })

  it("a HEADERS flood past --h2-max-streams: the extra streams are refused (REFUSED_STREAM), the app sees that many and no more", async () => {
    const held: Array<() => void> = []
    let fourHeld: () => void = () => {}
    const fourReached = new Promise<void>((resolve) => (fourHeld = resolve))
    // Requests held unanswered: every stream stays open.
    const holding = await startMesh(cleanup, (_req, res) => {
      held.push(() => res.end())
      if (held.length === 4) fourHeld()
    }, { a: { h2MaxStreams: 4 } })
    cleanup.add(() => held.forEach((release) => release()))
    const raw = await connectRawH2(cleanup, holding.a.outboundPort, false)
    // Its SETTINGS first (max concurrent streams 4), as a client must wait for.
    await raw.until((frames) => frames.some((f) => f.type === Type.settings && (f.flags & Flag.ack) === 0), "the server's SETTINGS")
    const headers = Array.from({ length: 150 }, (_, i) => h2Frame(Type.headers, Flag.endHeaders | Flag.endStream, 1 + 2 * i, request(`/flood${i}`)))
    raw.socket.write(Buffer.concat(headers))
    const refused = (frames: ReadonlyArray<Frame>) => frames.filter((f) => f.type === Type.rst && f.payload.readUInt32BE(0) === http2.constants.NGHTTP2_REFUSED_STREAM)
    // Refused by nghttp2 before node makes a stream of them: nothing of ours runs for them.
    await raw.until((frames) => refused(frames).length === 146, "146 streams refused")
    // The 4 not refused reach the app (146 + 4: none is left to come).
    await withTimeout(fourReached, 2000, "the 4 streams allowed to reach the app")
    expect(holding.app.seen.map((r) => r.url)).toEqual(["/flood0", "/flood1", "/flood2", "/flood3"])
  })
})
