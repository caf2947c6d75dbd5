// The load-balance client's streamed calls (`stream`, src/toolkit/loadBalanceClient.ts) over real
// IIP servers on 127.0.0.1:
// - The answer streams: its first chunk is read before the backend sends the rest, and the
//   backend counts the call as pending until the body ends (then 0).
// - Leaving the body early cancels the call at the backend (its cancel observed) and ends the
//   pending count.
// - The calling hooks see a streamed call: a hook's metadata reaches the backend, a hook's answer
//   comes back whole without a backend, a refusal rejects.
// - A call that never reached a backend (a dead one) goes to a live one; a plain IIP backend's
//   answer comes whole.
import { Exit } from "effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Refused } from "../../src/iip/dispatch.ts"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { rejection, startServer } from "../support/meshTest.ts"
import { addressOf, deadPort, startLb } from "./support.ts"

const text = async (body: AsyncIterable<Buffer>): Promise<string> => {
  let out = ""
  for await (const chunk of body) out += chunk.toString()
  return out
}

describe("load-balance client, streamed answers", () => {
  let cleanup: Cleanup
  let server: IipServer
  let release: ReturnType<typeof deferred>
  let cancelled: ReturnType<typeof deferred>

  beforeEach(async () => {
    cleanup = new Cleanup()
    release = deferred()
    cancelled = deferred()
    server = await startServer(cleanup)
    // "first", then the rest only once released.
    server.handle("/held", (request) => {
      request.context.cancel.addEventListener("abort", () => cancelled.resolve(undefined))
      return reply(
        (async function*() {
          yield Buffer.from("first")
          await release.promise
          yield Buffer.from(" rest")
        })()
      )
    })
    server.handle("/meta", (request) => request.meta.get("authorization") ?? "none")
  })

  afterEach(() => cleanup.run())

  it("streams the answer, and counts the call pending at its backend until the body ends", async () => {
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1` })
    const answer = await lb.stream("/held", "", { timeoutMs: 10_000 })
    expect(answer.stream).toBeDefined()
    const iterator = answer.stream![Symbol.asyncIterator]()
    expect((await withTimeout(iterator.next(), 5000, "the first chunk")).value?.toString()).toBe("first")
    expect(lb.status()[0]!.pending).toBe(1)
    release.resolve(undefined)
    let rest = ""
    for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) rest += next.value.toString()
    expect(rest).toBe(" rest")
    expect(lb.status()[0]).toMatchObject({ pending: 0, health: "healthy", failures: 0 })
  })

  it("leaving the body early cancels the call at the backend and ends its pending count", async () => {
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1` })
    const answer = await lb.stream("/held", "", { timeoutMs: 10_000 })
    const iterator = answer.stream![Symbol.asyncIterator]()
    await iterator.next()
    await iterator.return!()
    await withTimeout(cancelled.promise, 5000, "the backend's cancel")
    expect(lb.status()[0]).toMatchObject({ pending: 0, health: "healthy", failures: 0 })
  })

  it("runs the calling hooks: their metadata reaches the backend, their answer or refusal stands", async () => {
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1` })
    lb.use({ before: (call) => void call.meta.set("authorization", "Bearer s3cret") })
    lb.useFor("/cached", { before: () => Exit.succeed(Buffer.from("from cache")) })
    lb.useFor("/refused", { before: () => Exit.fail(new Refused({ code: "invalid", message: "no" })) })
    const withMeta = await lb.stream("/meta")
    expect(withMeta.stream === undefined ? withMeta.data.toString() : await text(withMeta.stream)).toBe("Bearer s3cret")
    const cached = await lb.stream("/cached")
    expect([cached.data.toString(), cached.stream]).toStrictEqual(["from cache", undefined])
    expect(await rejection(lb.stream("/refused"))).toMatchObject({ _tag: "Refused", code: "invalid" })
  })

  it("moves a call that never reached a backend to a live one; a plain backend answers whole", async () => {
    const dead = `127.0.0.1:${await deadPort()}`
    const plain = await startServer(cleanup, { mesh: false })
    plain.handle("/who", () => "plain")
    const lb = startLb(cleanup, { backends: `${dead}#1,${addressOf(server)}#1`, method: "MethodRoundrobin" })
    release.resolve(undefined)
    for (let i = 0; i < 4; i++) {
      const answer = await lb.stream("/held", "", { timeoutMs: 10_000 })
      expect(await text(answer.stream!)).toBe("first rest")
    }
    expect(lb.status()[0]).toMatchObject({ address: dead, health: "ejected" })
    const lbPlain = startLb(cleanup, { backends: `${addressOf(plain)}#1` })
    const whole = await lbPlain.stream("/who")
    expect([whole.data.toString(), whole.stream]).toStrictEqual(["plain", undefined])
    await waitFor(() => lbPlain.status()[0]!.pending === 0, 1000, "the plain call's end")
  })
})
