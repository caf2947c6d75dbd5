// Cancellation (src/mux/cancellation.ts): the AbortSignal stand-in on the hot path.
import { describe, expect, it } from "vitest"
import { Cancellation } from "../../src/mux/cancellation.ts"

describe("Cancellation", () => {
  it("runs each listener once, in order, on the first abort only", () => {
    const cancellation = new Cancellation()
    const seen: Array<string> = []
    cancellation.addEventListener("abort", () => seen.push("a"))
    cancellation.addEventListener("abort", () => seen.push("b"))
    cancellation.abort("why")
    cancellation.abort("again")
    expect(seen).toStrictEqual(["a", "b"])
    expect(cancellation.aborted).toBe(true)
    expect(cancellation.reason).toBe("why")
  })

  it("a removed listener does not run; one added after the abort never runs", () => {
    const cancellation = new Cancellation()
    const seen: Array<string> = []
    const first = () => seen.push("first")
    const second = () => seen.push("second")
    cancellation.addEventListener("abort", first)
    cancellation.addEventListener("abort", second)
    cancellation.removeEventListener("abort", first)
    cancellation.abort()
    cancellation.addEventListener("abort", () => seen.push("late"))
    expect(seen).toStrictEqual(["second"])
  })

  it("takes a listener object (handleEvent), as an AbortSignal does, in order with functions and removable", () => {
    const seen: Array<string> = []
    const listener = { handleEvent: () => seen.push("object") }
    const cancellation = new Cancellation()
    cancellation.addEventListener("abort", () => seen.push("function"))
    cancellation.addEventListener("abort", listener)
    cancellation.abort()
    expect(seen).toStrictEqual(["function", "object"])
    const removed = new Cancellation()
    removed.addEventListener("abort", listener)
    removed.removeEventListener("abort", listener)
    removed.abort()
    expect(seen).toStrictEqual(["function", "object"])
    const controller = new AbortController()
    controller.signal.addEventListener("abort", listener)
    controller.abort()
    expect(seen).toStrictEqual(["function", "object", "object"])
  })

  it("its AbortSignal, made on first read, follows it either way round", () => {
    const before = new Cancellation()
    const signal = before.signal
    expect(signal.aborted).toBe(false)
    before.abort("stop")
    expect(signal.aborted).toBe(true)
    expect(signal.reason).toBe("stop")
    const after = new Cancellation()
    after.abort("gone")
    expect(after.signal.aborted).toBe(true)
    expect(after.signal.reason).toBe("gone")
    expect(after.signal).toBe(after.signal)
  })
})
