// Empty continuation packets of a streamed body (PROTOCOL.md §12): the sender never sends one but
// the last, yet a peer may. They bring a stream nothing and count in no window, no budget and no
// credit; kept as chunks they cost an object and a reference to the read slab they lie in each, so
// a hand-played dialer could make the server hold memory without bound for a body its handler has
// not read yet. A mesh server fed 300,000 of them holds next to nothing more, and the handler,
// once it reads, gets the body's bytes.
import { expect, it } from "vitest"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, collectGarbage, deferred, untilTurn } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

/** The test's exchange; its server and dialer are closed by `cleanup`. */
const emptiesThenBody = async (cleanup: Cleanup): Promise<void> => {
  const server = await startServer(cleanup)
  const gate = deferred()
  let started = false
  server.handle("/later", async (request) => {
    started = true
    await gate.promise
    return (await request.context.stream!.readAll(1024)).toString()
  })
  server.handle("/mark", () => "m")
  const raw = await meshDialer(server.address.port, cleanup)
  raw.write(meshRequest(0, "/later", 1, 1, Buffer.from("a")))
  await untilTurn(() => started, "the handler to start")
  collectGarbage()
  const before = process.memoryUsage()
  const empty = meshChunk(2, "/later", 1, new Uint8Array(0))
  for (let i = 0; i < 30; i++) raw.write(Buffer.concat(Array.from({ length: 10_000 }, () => empty)))
  // Read after them, in order: once it is answered, the server has taken every empty packet.
  raw.write(meshRequest(1, "/mark", 3, 1, Buffer.from("m")))
  for (;;) if ((await raw.next(30_000)).path === "/mark") break
  collectGarbage()
  const after = process.memoryUsage()
  const grown = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers
  // Kept as chunks: ~41 MB (an object each, and the 64 KiB read slabs they lie in).
  expect(grown / 1e6).toBeLessThan(12)
  raw.write(meshChunk(3, "/later", 1, Buffer.from("b")))
  gate.resolve()
  for (;;) {
    const packet = await raw.next(10_000)
    if (packet.path === "/later" && packet.channelId === 1) {
      expect(packet.data.toString("latin1")).toMatch(/ab$/)
      return
    }
  }
}

it("300,000 empty continuation packets to a body not read yet hold next to no memory; the body is read whole after them", async () => {
  const cleanup = new Cleanup()
  try {
    await emptiesThenBody(cleanup)
  } finally {
    await cleanup.run()
  }
}, 60_000)
