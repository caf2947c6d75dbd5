// How a stream's two halves (src/mux/streams.ts) end: a SendWindow closed twice keeps the first
// reason (a tunnel ended `overloaded`, then cancelled by its caller, still ends `overloaded`), and
// an IncomingStream failed here while its sender goes on grants back what it drops, so the sender
// is never left without credit for bytes nobody holds.
import { describe, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshChannels.ts"
import { IncomingStream, SendWindow, StreamFailed } from "../../src/mux/streams.ts"

describe("SendWindow.close", () => {
  it("keeps the first reason: a cancel after an overload still reads as overloaded", async () => {
    const window = new SendWindow(0)
    const overloaded = new RemoteError({ code: "overloaded", message: "no room", processed: true })
    window.close(overloaded)
    window.close(new RemoteError({ code: "cancelled", message: "cancelled by the caller", processed: true }))
    expect(window.closedError).toBe(overloaded)
    await expect(window.take(1)).rejects.toBe(overloaded)
  })
})

describe("IncomingStream after a failure", () => {
  it("grants back each chunk it drops once failed here (its sender goes on), and nothing twice", () => {
    const grants: Array<number> = []
    const stream = new IncomingStream(1024, (bytes) => grants.push(bytes))
    expect(stream.push(Buffer.alloc(100))).toBe(true)
    stream.fail(new StreamFailed({ message: "the app's connection closed" }))
    expect(stream.push(Buffer.alloc(300))).toBe(true)
    expect(grants).toEqual([300])
    expect(stream.push(Buffer.alloc(200))).toBe(true)
    expect(grants).toEqual([300, 200])
    stream.discard()
    expect(grants).toEqual([300, 200])
  })
})
