// The h2 answer fuzz's app (test/sidecar/h2-answer-fuzz.test.ts): a raw TCP server that speaks just
// enough HTTP/2 server side for sidecar B's h2c leg (src/sidecar/appH2.ts): its SETTINGS, B's
// acknowledged, B's PINGs answered, each request read to its END_STREAM. A request's body names its
// case and call (h2AnswerCases.ts callTag); once all of the current case's calls are in, their
// answers go out as the case planned them, interleaved, HPACK-coded by the connection's own encoder
// (h2Wire.ts). It records what a check needs: the connections it broke (a connection-level act) and
// any stream B opened on one after that, the connection each canary came on.
import type * as net from "node:net"
import { type AnswerCase, canaryTag, type WriteContext } from "./h2AnswerCases.ts"
import { Flag, type FieldCoding, frame, FrameReader, HpackEncoder, settings, settingsAck, Type } from "./h2Wire.ts"
import { prng } from "./prng.ts"
import { type Cleanup, startRawServer } from "../support/iipRaw.ts"

interface AppConnection {
  readonly n: number
  readonly socket: net.Socket
  readonly encoder: HpackEncoder
  highest: number
  /** Request bodies being read, by stream id. */
  readonly bodies: Map<number, Array<Buffer>>
  /** The app did something B must end the connection for (or sent GOAWAY): the case's tag. */
  broken: string | undefined
  /** Streams B opened after that. */
  readonly openedAfter: Array<number>
  /** Their requests' bodies (which call each was). */
  readonly lateTags: Array<string>
  /** Frames waiting for B's flow-control windows (RFC 9113 §6.9), in order; told once they are all out. */
  readonly queue: Array<Buffer>
  drained: (() => void) | undefined
  /** The app's send windows: the connection's, each stream's, and B's initial one (its SETTINGS). */
  connectionWindow: number
  readonly streamWindows: Map<number, number>
  initialWindow: number
  /** Streams B reset: their DATA is dropped, not held for a window that will not come. */
  readonly resetByB: Set<number>
  /** B said GOAWAY, or its side closed. */
  endedByB: boolean
  closed: boolean
}

interface Arrived {
  readonly connection: AppConnection
  readonly id: number
}

export interface AnswerApp {
  readonly port: number
  /** The case whose calls come next. */
  expect(one: AnswerCase, seed: number): void
  /** The connection (its number) each canary came on, by case. */
  readonly canaries: Map<number, number>
  readonly connections: Array<AppConnection>
  /** The current case's calls the app's GOAWAY left unprocessed (their k). */
  readonly unprocessed: ReadonlySet<number>
  /** Every dispatched answer is out (a paced case's last write done). */
  readonly written: () => boolean
  /** Requests that named no call of the current case (a retry of a call the app answered already is answered soundly). */
  readonly strays: Array<string>
}

/** Writes what B's windows let through, in order; DATA past them waits for B's WINDOW_UPDATE. */
const flush = (connection: AppConnection): void => {
  const out: Array<Buffer> = []
  const { queue } = connection
  while (queue.length > 0) {
    const f = queue[0]!
    if (f[3] === Type.data) {
      const id = f.readUInt32BE(5) & 0x7fffffff
      const length = f.readUIntBE(0, 3)
      if (!connection.resetByB.has(id)) {
        const stream = connection.streamWindows.get(id) ?? connection.initialWindow
        if (length > stream || length > connection.connectionWindow) break
        connection.streamWindows.set(id, stream - length)
        connection.connectionWindow -= length
      }
    }
    out.push(queue.shift()!)
  }
  if (out.length > 0 && !connection.closed) connection.socket.write(Buffer.concat(out))
  if ((queue.length === 0 || connection.closed) && connection.drained !== undefined) {
    const drained = connection.drained
    connection.drained = undefined
    queue.length = 0
    drained()
  }
}

const TAG = /h2a\/(\d+)\/(\w+)/

export const startAnswerApp = async (cleanup: Cleanup): Promise<AnswerApp> => {
  const connections: Array<AppConnection> = []
  const canaries = new Map<number, number>()
  const strays: Array<string> = []
  /** The current case's calls above the last stream id of the app's GOAWAY, nothing of their answers written (§6.8: not processed). */
  const unprocessed = new Set<number>()
  /** Connections whose answers are still going out (a paced case's). */
  let writing = 0
  let current: { one: AnswerCase; seed: number; arrived: Map<number, Arrived>; dispatched: boolean } | undefined

  const context = (connection: AppConnection, id: number, caseIds: ReadonlyArray<number>, coding: () => FieldCoding): WriteContext => ({ id, encoder: connection.encoder, coding, caseIds, highest: connection.highest })

  /**
   * All of the case's calls are in: each connection's answers, interleaved as planned; in one write,
   * or, in a paced case, in several with a pause of a few ms now and then (B then streams an answer
   * to A head first, rather than holding it whole).
   */
  const dispatch = () => {
    const { one, seed, arrived } = current!
    current!.dispatched = true
    const rng = prng(seed ^ Math.imul(one.id + 1, 0x9e3779b1))
    const coding = (): FieldCoding => ({ index: one.indexed && rng.next() < 0.6, huffman: one.huffman && rng.next() < 0.7 })
    const byConnection = new Map<AppConnection, Array<number>>()
    for (const [k, at] of arrived) (byConnection.get(at.connection) ?? byConnection.set(at.connection, []).get(at.connection)!).push(k)
    // The act goes on the connection of the first call.
    const actOn = arrived.get(0)?.connection
    for (const [connection, ks] of byConnection) {
      const caseIds = ks.map((k) => arrived.get(k)!.id).sort((a, b) => a - b)
      const next = new Map(ks.map((k) => [k, 0]))
      let goawayLast = Infinity
      /** Groups of each call's answer written so far (a call with none when the GOAWAY goes was not processed). */
      const written = new Map(ks.map((k) => [k, 0]))
      // Each step encodes its frames as it goes out: the HPACK table follows the order B decodes in.
      const steps: Array<() => Array<Buffer>> = []
      const act = () => {
        if (one.act === undefined || connection !== actOn) return
        steps.push(() => {
          const frames = one.act!.act.frames(context(connection, 0, caseIds, coding))
          if (one.act!.act.goaway !== undefined) {
            goawayLast = frames[0]!.readUInt32BE(9) & 0x7fffffff
            // Only while B's session lives: one B ended already, or may have for an earlier frame's
            // error (a stream window overflow, say: nghttp2 ends the connection), failed its streams for that.
            if (!connection.endedByB && !one.mayEnd) for (const k of ks) if (arrived.get(k)!.id > goawayLast && written.get(k) === 0) unprocessed.add(k)
          }
          if (one.act!.act.fatal) connection.broken = one.act!.act.tag
          return frames
        })
      }
      one.order.forEach((k, i) => {
        if (i === one.act?.at) act()
        if (!next.has(k)) return
        const id = arrived.get(k)!.id
        const group = one.answers[k]!.groups[next.get(k)!]!
        next.set(k, next.get(k)! + 1)
        // Past the app's GOAWAY, streams above its last stream id get nothing more (§6.8: not processed).
        steps.push(() => {
          if (id > goawayLast) return []
          written.set(k, written.get(k)! + 1)
          return group(context(connection, id, caseIds, coding))
        })
      })
      if (one.act?.at === one.order.length) act()
      writing++
      const run = (from: number) => {
        let at = from
        while (at < steps.length) {
          connection.queue.push(...steps[at++]!())
          if (one.paced && rng.next() < 0.3) break
        }
        flush(connection)
        if (at < steps.length && !connection.closed) return void setTimeout(run, rng.int(1, 6), at)
        // The last of it out (flow control may hold DATA back): then, after its GOAWAY, the app
        // closes, as a server going away does.
        connection.drained = () => {
          writing--
          if (goawayLast !== Infinity) connection.socket.end()
        }
        flush(connection)
      }
      run(0)
    }
  }

  const requestIn = (connection: AppConnection, id: number, body: Buffer) => {
    const text = body.toString("latin1")
    if (connection.broken !== undefined && connection.openedAfter.includes(id)) connection.lateTags.push(`${id}: ${text.slice(0, 40)}`)
    const match = TAG.exec(text)
    const caseId = match === null ? -1 : Number(match[1])
    if (match !== null && text.includes(canaryTag(caseId))) {
      canaries.set(caseId, connection.n)
      const fields: Array<readonly [string, string]> = [[":status", "200"], ["x-answer-of", canaryTag(caseId)]]
      connection.queue.push(frame(Type.headers, Flag.endHeaders, id, connection.encoder.block(fields, () => ({ index: false, huffman: false }))), frame(Type.data, Flag.endStream, id, Buffer.from(`canary ${caseId}`)))
      return flush(connection)
    }
    const k = match === null ? NaN : Number(match[2])
    const one = current?.one
    if (one === undefined || caseId !== one.id || one.answers[k] === undefined) return void strays.push(text.slice(0, 80))
    // A retry of a call (its first stream refused or not processed): answered soundly.
    if (current!.dispatched) {
      connection.queue.push(...one.answers[k]!.sound(context(connection, id, [id], () => ({ index: false, huffman: false }))))
      return flush(connection)
    }
    current!.arrived.set(k, { connection, id })
    if (current!.arrived.size === one.answers.length) dispatch()
  }

  const { port } = await startRawServer(cleanup, (socket) => {
    const connection: AppConnection = {
      n: connections.length, socket, encoder: new HpackEncoder(), highest: 0, bodies: new Map(), broken: undefined, openedAfter: [], lateTags: [],
      queue: [], drained: undefined, connectionWindow: 65_535, streamWindows: new Map(), initialWindow: 65_535, resetByB: new Set(), endedByB: false, closed: false
    }
    connections.push(connection)
    socket.write(settings([[3, 100]]))
    const reader = new FrameReader()
    let preface = 24
    socket.on("data", (data: Buffer) => {
      if (preface > 0) {
        const skip = Math.min(preface, data.length)
        preface -= skip
        data = data.subarray(skip)
      }
      reader.push(data, (f) => {
        if (f.type === Type.settings && (f.flags & Flag.ack) === 0) {
          for (let at = 0; at + 6 <= f.payload.length; at += 6) {
            if (f.payload.readUInt16BE(at) !== 4) continue
            const value = f.payload.readUInt32BE(at + 2)
            // A new initial window moves every open stream's by the difference (§6.9.2).
            for (const [id, window] of connection.streamWindows) connection.streamWindows.set(id, window + value - connection.initialWindow)
            connection.initialWindow = value
          }
          socket.write(settingsAck())
          flush(connection)
        } else if (f.type === Type.windowUpdate && f.payload.length === 4) {
          const increment = f.payload.readUInt32BE(0) & 0x7fffffff
          if (f.stream === 0) connection.connectionWindow += increment
          else connection.streamWindows.set(f.stream, (connection.streamWindows.get(f.stream) ?? connection.initialWindow) + increment)
          flush(connection)
        } else if (f.type === Type.rst) {
          connection.resetByB.add(f.stream)
          flush(connection)
        }
        if (f.type === Type.ping && (f.flags & Flag.ack) === 0) socket.write(frame(Type.ping, Flag.ack, 0, f.payload))
        else if (f.type === Type.goaway) connection.endedByB = true
        else if (f.type === Type.headers && f.stream > connection.highest) {
          connection.highest = f.stream
          if (connection.broken !== undefined) connection.openedAfter.push(f.stream)
          connection.bodies.set(f.stream, [])
        } else if (f.type === Type.data) connection.bodies.get(f.stream)?.push(f.payload)
        if ((f.type === Type.data || f.type === Type.headers) && (f.flags & Flag.endStream) !== 0) {
          const parts = connection.bodies.get(f.stream)
          connection.bodies.delete(f.stream)
          if (parts !== undefined) requestIn(connection, f.stream, Buffer.concat(parts))
        }
      })
    })
    socket.once("end", () => (connection.endedByB = true))
    socket.once("close", () => {
      connection.closed = true
      connection.endedByB = true
      flush(connection)
    })
  })
  return {
    port,
    canaries,
    connections,
    strays,
    written: () => writing === 0,
    unprocessed,
    expect: (one, seed) => {
      current = { one, seed, arrived: new Map(), dispatched: false }
      unprocessed.clear()
    }
  }
}
