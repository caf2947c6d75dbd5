// Pins HTTP/2 flow control (src/h2/flowWindow.ts, RFC 9113 6.9): send windows shrink as DATA goes,
// grow by WINDOW_UPDATE and stop at 2^31-1 (stream error on a stream, connection error on the
// connection); a new SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window, which may go
// negative; receive windows catch a peer that overruns them and give back half a window at once.
import { describe, expect, it } from "vitest"
import { ReceiveWindow, SendWindows } from "../../src/h2/flowWindow.ts"
import { ErrorCode, MAX_WINDOW_SIZE } from "../../src/h2/frames.ts"

const fields = (error: { code: number; scope: string; streamId: number; reason: string } | undefined) =>
  error && [error.code, error.scope, error.streamId, error.reason]

describe("send windows", () => {
  it("allow the least of what is wanted, the connection's and the stream's window", () => {
    const windows = new SendWindows<{ sendWindow: number }>()
    const a = { sendWindow: 0 }
    const b = { sendWindow: 0 }
    windows.add(a)
    windows.add(b)
    expect(windows.allowance(a, 100_000)).toBe(65_535)
    windows.consume(a, 60_000)
    expect([windows.allowance(a, 100_000), windows.allowance(b, 100_000), windows.allowance(b, 10)]).toStrictEqual([5535, 5535, 10])
    windows.consume(b, 5535)
    expect(windows.allowance(a, 1)).toBe(0)
    expect(windows.growConnection(1000)).toBeUndefined()
    expect([windows.allowance(a, 100_000), windows.allowance(b, 100_000)]).toStrictEqual([1000, 1000])
  })

  it("apply a new initial window size to every open stream, negative included, and not to removed ones", () => {
    const windows = new SendWindows<{ sendWindow: number }>()
    const open = { sendWindow: 0 }
    const gone = { sendWindow: 0 }
    windows.add(open)
    windows.add(gone)
    windows.consume(open, 60_000)
    windows.remove(gone)
    expect(windows.setInitial(1000)).toBeUndefined()
    expect([open.sendWindow, gone.sendWindow, windows.allowance(open, 10)]).toStrictEqual([1000 - 60_000, 65_535, 0])
    const late = { sendWindow: 0 }
    windows.add(late)
    expect(late.sendWindow).toBe(1000)
    expect(windows.growStream(open, 1, 59_001)).toBeUndefined()
    expect(windows.allowance(open, 10)).toBe(1)
  })

  it("refuse to grow past 2^31-1: a stream error on a stream, a connection error on the connection and on SETTINGS", () => {
    const windows = new SendWindows<{ sendWindow: number }>()
    const stream = { sendWindow: 0 }
    windows.add(stream)
    expect(windows.growStream(stream, 3, MAX_WINDOW_SIZE - 65_535)).toBeUndefined()
    expect(fields(windows.growStream(stream, 3, 1))).toStrictEqual([ErrorCode.FLOW_CONTROL_ERROR, "stream", 3, "window-overflow"])
    expect(stream.sendWindow).toBe(MAX_WINDOW_SIZE)
    expect(fields(windows.growConnection(MAX_WINDOW_SIZE))).toStrictEqual([ErrorCode.FLOW_CONTROL_ERROR, "connection", 0, "window-overflow"])
    expect(fields(windows.setInitial(65_536))).toStrictEqual([ErrorCode.FLOW_CONTROL_ERROR, "connection", 0, "window-overflow"])
    expect(stream.sendWindow).toBe(MAX_WINDOW_SIZE)
  })
})

describe("receive windows", () => {
  it("catch a peer that sends past the window, padding counted", () => {
    const window = new ReceiveWindow(1000)
    expect([window.receive(999), window.receive(1), window.receive(1)]).toStrictEqual([true, true, false])
  })

  it("give back what was released once half the window waits, in one increment", () => {
    const window = new ReceiveWindow(1000)
    window.receive(1000)
    window.release(499)
    expect(window.takeUpdate()).toBe(0)
    window.release(1)
    expect([window.takeUpdate(), window.available, window.takeUpdate()]).toStrictEqual([500, 500, 0])
    expect(window.receive(500)).toBe(true)
    expect(window.receive(1)).toBe(false)
  })

  it("raise the announced size with one increment, capped at 2^31-1", () => {
    const window = new ReceiveWindow()
    expect([window.raise(1 << 20), window.raise(1000), window.raise(2 ** 32)]).toStrictEqual([(1 << 20) - 65_535, 0, MAX_WINDOW_SIZE - (1 << 20)])
    expect(window.available).toBe(MAX_WINDOW_SIZE)
  })
})
