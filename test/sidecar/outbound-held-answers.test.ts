// Whole answers waiting in the outbound listener's sockets for callers that do not read them
// (http1Connection.ts). Each connection holds at most one (the next request waits for its drain),
// but nothing bounded them across connections: many slow readers, each holding one large answer,
// could grow the process without end. Now the bytes held so count in one budget of the listener's
// (`maxHeldAnswerBytes`, the sidecar's maxQueuedBytes): past it a new request is refused 503
// overloaded at the outbound hop before it is forwarded, and once the readers take their answers
// requests are answered again. Failed before (every caller got its 16 MiB answer, 192 MiB held).
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { listenOutbound } from "../support/outboundListener.ts"

const MiB = 1024 * 1024
/** Larger than what loopback's socket buffers take (a few MiB): most of it waits in the listener's process. */
const ANSWER = 16 * MiB
const BUDGET = 8 * MiB
const CALLERS = 12

describe("whole answers held for callers that do not read them", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A listener answering every request with ANSWER bytes in one write (`answered` counts them). */
  const bigAnswers = async (maxHeldAnswerBytes: number) => {
    const counts = { answered: 0 }
    const { listener, port } = await listenOutbound(
      cleanup,
      (call) => {
        counts.answered++
        call.writeHead(200, [["content-length", String(ANSWER)]])
        call.end(Buffer.alloc(ANSWER, 0x61))
      },
      { maxHeldAnswerBytes }
    )
    return { listener, port, counts }
  }

  /** A caller that sends one request; paused, it reads nothing until resumed. */
  const caller = (port: number, paused: boolean) => {
    const socket = net.connect(port, "127.0.0.1")
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    if (paused) socket.pause()
    // One answer each (a refusal closes): its head parsed, its body only counted (16 MiB gathered chunk by chunk would be slow to copy).
    const answers: Array<{ status: string; error: string | undefined; bytes: number }> = []
    let start = Buffer.alloc(0)
    let head: string | undefined
    let length = 0
    let bytes = 0
    socket.on("data", (chunk: Buffer) => {
      if (head === undefined) {
        start = Buffer.concat([start, chunk])
        const end = start.indexOf("\r\n\r\n")
        if (end === -1) return
        head = start.toString("latin1", 0, end)
        length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        bytes = start.length - end - 4
      } else bytes += chunk.length
      if (answers.length === 0 && bytes >= length) answers.push({ status: head.split("\r\n")[0]!, error: /\r\nx-iip-mesh-error: *([^\r]*)/i.exec(head)?.[1], bytes })
    })
    socket.write("GET /big HTTP/1.1\r\nhost: catalog\r\n\r\n")
    return { socket, answers }
  }

  it("past the listener's budget later callers are refused 503 overloaded, the answers held stay bounded, and taken answers make room", async () => {
    const { listener, port, counts } = await bigAnswers(BUDGET)
    const before = process.memoryUsage().arrayBuffers
    const slow: Array<ReturnType<typeof caller>> = []
    for (let i = 0; i < CALLERS; i++) {
      slow.push(caller(port, true))
      // One at a time: each request is read (and answered or refused) before the next caller comes.
      await waitFor(() => counts.answered + listener.refusedForHeldAnswers >= i + 1, 10_000, `caller ${i} to be answered or refused`)
    }
    // The first answer alone fills the budget: the rest are refused, nothing more is held.
    expect(counts.answered).toBe(1)
    expect(listener.heldAnswerBytes).toBeGreaterThan(BUDGET)
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(3 * ANSWER)
    const reading = caller(port, false)
    await waitFor(() => reading.answers.length === 1, 10_000, "the refusal")
    expect(reading.answers[0]).toStrictEqual({ status: "HTTP/1.1 503 Service Unavailable", error: "outbound; reason=overloaded", bytes: reading.answers[0]!.bytes })
    // The slow callers read: their answers (and refusals) come, the budget is free again, and a new caller is answered.
    for (const s of slow) s.socket.resume()
    await withTimeout(waitFor(() => slow.every((s) => s.answers.length === 1), 20_000, "every slow caller's answer"), 25_000, "the slow callers")
    expect(slow[0]!.answers[0]!.bytes).toBe(ANSWER)
    expect(slow.slice(1).every((s) => s.answers[0]!.status === "HTTP/1.1 503 Service Unavailable")).toBe(true)
    await waitFor(() => listener.heldAnswerBytes === 0, 10_000, "the budget to be free")
    const later = caller(port, false)
    await waitFor(() => later.answers.length === 1, 20_000, "the later caller's answer")
    expect(later.answers[0]!.bytes).toBe(ANSWER)
  }, 60_000)

  it("an answer held counts once in the budget: the bytes the process holds for it, not those plus libuv's unsent share of them", async () => {
    // Room for one held answer and a quarter: a second caller's request is answered, a third's refused.
    const { listener, port, counts } = await bigAnswers(ANSWER + ANSWER / 4)
    caller(port, true)
    await waitFor(() => counts.answered === 1 && listener.heldAnswerBytes > 0, 10_000, "the first answer to be held")
    // The answer's head and body at most (the kernel's buffers hold part of it: less, never more).
    expect(listener.heldAnswerBytes).toBeGreaterThan(ANSWER / 2)
    expect(listener.heldAnswerBytes).toBeLessThanOrEqual(ANSWER + 1024)
    caller(port, true)
    await waitFor(() => counts.answered + listener.refusedForHeldAnswers === 2, 10_000, "the second caller to be answered or refused")
    expect(counts.answered).toBe(2)
    const third = caller(port, false)
    await waitFor(() => third.answers.length === 1, 10_000, "the third caller's refusal")
    expect(third.answers[0]!.status).toBe("HTTP/1.1 503 Service Unavailable")
  }, 30_000)

  it("a last answer (connection: close) all out leaves the budget while its close lingers for the caller's FIN", async () => {
    // The lingering close (peerFin.ts's lingerAfterEnd) keeps the connection up to 2 s after its
    // end went out, waiting for a FIN this caller never sends: the answer's bytes, gone from the
    // process, counted on until the close, and refused other callers' requests meanwhile.
    const { listener, port, counts } = await bigAnswers(512 * MiB)
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    socket.write("GET /big HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n")
    // (Held in part on loopback's default buffers; kernel buffers of 2 x 16 MiB take it all, and hold nothing to count.)
    await waitFor(() => counts.answered === 1, 10_000, "the answer")
    let bytes = 0
    socket.on("data", (chunk: Buffer) => (bytes += chunk.length))
    const ended = new Promise<void>((resolve) => socket.once("end", () => resolve()))
    socket.resume()
    await withTimeout(ended, 10_000, "the answer's end")
    expect(bytes).toBeGreaterThan(ANSWER)
    // All of it out (the caller read it to A's FIN): free in the budget, before the linger's end closes the connection.
    await waitFor(() => listener.heldAnswerBytes === 0 || listener.openConnections === 0, 10_000, "the budget to be free or the connection closed")
    expect({ held: listener.heldAnswerBytes, open: listener.openConnections }).toStrictEqual({ held: 0, open: 1 })
  }, 30_000)
})
