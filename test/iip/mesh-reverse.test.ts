// Calls in both directions and pushes over one mesh connection, real TCP (PROTOCOL.md §11, §12):
// - Reverse call: the client registers /whoami; the server gets the MeshSession from
//   onMeshConnection, opens a channel in its own id range (2^31+1 ..) without a round trip and
//   calls the client's handler, which answers; typed errors and metadata work that way too.
// - Push client -> server: `client.push("/events", "e1")` reaches the server's handler as a
//   one-way request and nothing is answered (the client's next calls pair normally).
// - Push server -> client: `session.push(channel, path, body)` reaches a client handler one-way.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { failure, type IipServer } from "../../src/iip/server.ts"
import { type MeshCallError, type MeshReply, type MeshSession, RemoteError } from "../../src/mux/meshSession.ts"
import { AcceptorChannelBase } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, startClient, startServer } from "../support/meshTest.ts"

interface Seen {
  readonly path: string
  readonly data: string
  readonly channelId: number
  readonly oneway: boolean
  readonly meta: ReadonlyMap<string, string>
}

const seenOf = (request: { path: string; data: Buffer; channelId: number; context: { oneway: boolean; meta: ReadonlyMap<string, string> } }): Seen => ({
  path: request.path,
  data: request.data.toString("utf8"),
  channelId: request.channelId,
  oneway: request.context.oneway,
  // Its entries as a Map: the metadata decoded is a ReadonlyMap (a MetaEntries), compared by its entries.
  meta: new Map(request.context.meta)
})

/** session.call as a promise of (error, reply). */
const callOn = (session: MeshSession, channel: ReturnType<MeshSession["openChannel"]>, path: string, body: string, meta?: ReadonlyMap<string, string>) => {
  const done = deferred<{ error: MeshCallError | undefined; reply: MeshReply | undefined }>()
  session.call(channel, path, Buffer.from(body, "utf8"), { timeoutMs: 5000, ...(meta === undefined ? {} : { meta }) }, (error, reply) => done.resolve({ error, reply }))
  return withTimeout(done.promise, 5000, `the answer to ${path}`)
}

describe("reverse calls and pushes on a mesh connection", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  let session: MeshSession
  let events: Array<LogEvent>

  beforeEach(async () => {
    cleanup = new Cleanup()
    const log = collectLog()
    events = log.events
    server = await startServer(cleanup, { node: "server-b", log: log.log })
    server.handle("/echo", (request) => request.data)
    const connected = deferred<MeshSession>()
    server.onMeshConnection((s) => connected.resolve(s))
    client = startClient(cleanup, server.address.port, { node: "client-a", maxConnections: 1, log: log.log })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    session = await withTimeout(connected.promise, 5000, "onMeshConnection")
    expect(session.remoteNode).toBe("client-a")
    expect(server.meshSessions.has(session)).toBe(true)
  })

  afterEach(async () => {
    await cleanup.run()
    expect(events.filter((e) => e.event === "protocol-violation" || e.event === "push-failed")).toEqual([])
  })

  it("the server calls the client's /whoami on a channel it opens itself and gets the client handler's answer", async () => {
    const seen: Array<Seen> = []
    client.handle("/whoami", (request) => {
      seen.push(seenOf(request))
      return `client-a answering ${request.data.toString("utf8")} (trace ${request.meta.get("trace") ?? "-"})`
    })
    const channel = session.openChannel()
    expect(channel.id).toBe(AcceptorChannelBase + 1)
    const { error, reply } = await callOn(session, channel, "/whoami", "who are you?", new Map([["trace", "t-42"]]))
    expect(error).toBeUndefined()
    expect(reply!.data.toString("utf8")).toBe("client-a answering who are you? (trace t-42)")
    expect(seen).toEqual([
      // deadline-ms: the 5 s timeout of the call travels with it.
      { path: "/whoami", data: "who are you?", channelId: AcceptorChannelBase + 1, oneway: false, meta: new Map([["trace", "t-42"], ["deadline-ms", "5000"]]) }
    ])
    // The same channel carries more calls, in order; the client's own calls are unaffected.
    const more = await Promise.all(["a", "b", "c"].map((x) => callOn(session, channel, "/whoami", x)))
    expect(more.map((m) => m.reply?.data.toString("utf8"))).toEqual(["a", "b", "c"].map((x) => `client-a answering ${x} (trace -)`))
    expect((await client.call("/echo", "still fine", { timeoutMs: 5000 })).toString()).toBe("still fine")
  })

  it("reverse calls fail typed too: an unknown client path is not_found, a client handler's failure keeps its code", async () => {
    client.handle("/refuse", () => failure("overloaded", "client busy", false))
    const channel = session.openChannel()
    const unknown = await callOn(session, channel, "/not-on-client", "x")
    expect(unknown.error).toBeInstanceOf(RemoteError)
    expect(unknown.error).toMatchObject({ code: "not_found", processed: false })
    const refused = await callOn(session, channel, "/refuse", "x")
    expect(refused.error).toMatchObject({ _tag: "RemoteError", code: "overloaded", message: "client busy", processed: false })
  })

  it("client.push(\"/events\", \"e1\") reaches the server's handler one-way and nothing is answered", async () => {
    const pushes: Array<Seen> = []
    const arrived = deferred()
    server.handle("/events", (request) => {
      pushes.push(seenOf(request))
      if (pushes.length === 2) arrived.resolve()
      return "an answer nobody may send"
    })
    client.push("/events", "e1")
    client.push("/events", "e2", new Map([["k", "v"]]))
    await withTimeout(arrived.promise, 5000, "both pushes at the server")
    expect(pushes.map((p) => [p.data, p.oneway])).toEqual([
      ["e1", true],
      ["e2", true]
    ])
    expect(pushes[1]!.meta.get("k")).toBe("v")
    // Had the server answered a push, the client would see an answer with nothing outstanding
    // (a protocol violation, checked after each test) or pair it with the next call.
    const answers = await Promise.all(["n1", "n2", "n3"].map((x) => client.call("/echo", x, { timeoutMs: 5000 })))
    expect(answers.map((a) => a.toString())).toEqual(["n1", "n2", "n3"])
    expect(client.meshSessions[0]!.callingCount).toBe(0)
    expect(session.servingCount).toBe(0)
  })

  it("session.push(channel, path, body) from the server reaches a client handler one-way", async () => {
    const delivered = deferred<Seen>()
    client.handle("/notify", (request) => {
      delivered.resolve(seenOf(request))
      return ""
    })
    const channel = session.openChannel()
    session.push(channel, "/notify", Buffer.from("n1", "utf8"))
    const seen = await withTimeout(delivered.promise, 5000, "the push at the client")
    expect(seen).toMatchObject({ path: "/notify", data: "n1", oneway: true, channelId: channel.id })
    // Nothing outstanding on either side, and a call on the same channel still pairs.
    expect(session.callingCount).toBe(0)
    client.handle("/whoami", () => "client-a")
    const { reply } = await callOn(session, channel, "/whoami", "?")
    expect(reply!.data.toString("utf8")).toBe("client-a")
  })
})
