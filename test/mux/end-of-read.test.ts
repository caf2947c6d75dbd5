// atEndOfRead (src/mux/connection.ts): work a read's packets leave to the end of that read runs
// once they are all handed on, still within the read. Over real TCP in mesh mode: 32 calls sent at once reach the server in one read or a few; each
// handler registers the read's end once, and what the end does comes between the handlers of its
// read and those of the next. Outside a read nothing is registered.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IipServer } from "../../src/iip/server.ts"
import { atEndOfRead } from "../../src/mux/connection.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

describe("atEndOfRead", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup)
    client = startClient(cleanup, server.address.port, { maxConnections: 1 })
  })

  afterEach(() => cleanup.run())

  it("is refused outside a read", () => {
    let ran = false
    expect(atEndOfRead(() => (ran = true))).toBe(false)
    expect(ran).toBe(false)
  })

  it("runs once the read's packets are handed on, before the next read's", async () => {
    const log: Array<string> = []
    let registered = false
    let accepted = 0
    server.handle("/call", (request) => {
      log.push("handler")
      if (!registered) {
        registered = true
        if (atEndOfRead(() => {
          registered = false
          log.push("end")
        })) accepted++
      }
      return request.data
    })
    expect((await client.call("/call", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    log.length = 0
    accepted = 0
    const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => client.call("/call", `call ${i}`, { timeoutMs: 5000 })))
    expect(answers.map(String)).toStrictEqual(Array.from({ length: 32 }, (_, i) => `call ${i}`))
    // Every read's handlers, then its end: the end never runs before a handler of its read, nor after the next read's.
    expect(log.join(" ")).toMatch(/^(?:(?:handler )+end ?)+$/)
    expect(log.filter((entry) => entry === "handler")).toHaveLength(32)
    expect(log.filter((entry) => entry === "end")).toHaveLength(accepted)
    // The 32 left in one write: they arrive in fewer reads than 32, each read's end run once (run
    // at once instead, there would be an end after every handler).
    expect(accepted).toBeGreaterThan(0)
    expect(accepted).toBeLessThan(32)
  })
})
