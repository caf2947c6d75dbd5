// TurnReads (src/mux/turnReads.ts) under steady load: sockets on real TCP whose every read costs CPU,
// more of them than one turn's budget can read, each caller writing without end. A socket put off
// must get its read in a bounded number of turns: a socket put off again when the deferred ones ran
// over their budget used to go behind the ones this turn's poll put off, and those (fresh, served
// first) kept two budgets' worth of sockets going while the others never read again.
import * as net from "node:net"
import { afterEach, describe, it } from "vitest"
import { TurnReads } from "../../src/mux/turnReads.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"

const CALLERS = 40
const CHUNK = 16 * 1024

/** Burns `ms` of CPU: the cost of handling a read. */
const spin = (ms: number): void => {
  const until = performance.now() + ms
  while (performance.now() < until) {}
}

describe("TurnReads: sockets put off under steady load", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it(`${CALLERS} callers writing without end: every one is read again, none starved`, { timeout: 40_000 }, async () => {
    const turnReads = new TurnReads(10)
    const bytes = new Array<number>(CALLERS).fill(0)
    const server = net.createServer((socket) => {
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      let index = -1
      let readTurn = -1
      // What h2ConnectionCore.ts's onChunk does: a socket's first read of a turn asks for the budget.
      socket.on("data", (chunk: Buffer) => {
        if (index < 0) index = chunk[0]!
        if (readTurn !== turnReads.turn) {
          if (!turnReads.take(socket, chunk, performance.now())) return
          readTurn = turnReads.turn
        }
        spin(1)
        bytes[index]! += chunk.length
      })
    })
    cleanup.add(() => server.close())
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const port = (server.address() as net.AddressInfo).port
    for (let i = 0; i < CALLERS; i++) {
      const caller = net.connect(port, "127.0.0.1")
      caller.on("error", () => {})
      cleanup.add(() => caller.destroy())
      const chunk = Buffer.alloc(CHUNK, i)
      const write = (): void => {
        while (!caller.destroyed && caller.write(chunk)) {}
      }
      caller.on("drain", write)
      caller.on("connect", write)
    }
    // Each caller is read, and read again after that: a starved one never is (the waits fail).
    await waitFor(() => bytes.every((n) => n > 0), 15_000, "every caller's first read")
    const before = [...bytes]
    await waitFor(() => bytes.every((n, i) => n > before[i]!), 15_000, "every caller's next read")
  })
})
