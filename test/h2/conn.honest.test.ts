// Honest peers against the guards of our connection (src/h2/h2Guards.ts, h2Connection.ts): a
// grpc-js client whose calls miss their deadlines cancels each (RST_STREAM CANCEL) before any
// answer, soon after it began. Those resets are not premature: the caller waited as long as it said
// it would (the sidecar's rule, src/sidecar/outboundH2Premature.ts, has the same exception).
import * as grpc from "@grpc/grpc-js"
import { afterEach, describe, expect, it } from "vitest"
import { grpcClient, startEchoServer, unary } from "../helpers/h2ConnLegs.ts"
import { Cleanup } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

describe("honest peers keep their connection", () => {
  // Deadlines of 20-60 ms: a loop lagging past a deadline reads the call and its cancel together, as
  // if the reset came at once (premature; the sidecar's rule has the same limit). At 2-10 ms, 50 in
  // flight, two niced busy loops made it lose the connection in 1 of 4 runs.
  it("1,200 calls cancelled by grpc-js at their 20-60 ms deadline, 25 in flight: every call DEADLINE_EXCEEDED, the connection kept", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const codes = new Map<number, number>()
    let started = 0
    const worker = async (): Promise<void> => {
      while (started < 1200) {
        const n = started++
        const { error } = await unary(client, "Hang", Buffer.from("x"), new grpc.Metadata(), 20 + (n % 41))
        const code = error?.code ?? 0
        codes.set(code, (codes.get(code) ?? 0) + 1)
      }
    }
    await Promise.all(Array.from({ length: 25 }, worker))
    expect(Object.fromEntries(codes)).toStrictEqual({ [grpc.status.DEADLINE_EXCEEDED]: 1200 })
    expect(stats.closed).toStrictEqual([])
    expect(stats.connections).toHaveLength(1)
  })
})
