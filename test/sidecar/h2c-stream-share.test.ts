// Long-lived calls to an h2c app (appH2.ts): gRPC calls B knows to stream (a method one of whose
// answers carried a second message, or a call from its request's second message; not a unary call whose one large message streams) hold at most half of the
// app's places (--app-h2-max-streams, or fewer the app's SETTINGS allow); past that a new one is
// refused at once, UNAVAILABLE `inbound; reason=overloaded`, not processed, counted in
// iip_mesh_app_long_streams_refused_total, and unary calls keep the other half. Before, server
// streams that never end took every place (4 of 4 here) and a unary call waited out its deadline.
// A place comes back as its stream ends: the caller's cancel, the app's end, the app's reset, its
// session lost, the deadline; and as a call still waiting for a place leaves the line (its cancel).
// Event streams to an h2c app take the same share. A method's first
// call is not known to stream until its second message (either way): taken as an ordinary call,
// counted then, or cut then past the share, RESOURCE_EXHAUSTED: the app saw it (h2c-first-calls.test.ts).
// Real peers: a grpc-js client -> sidecar A -> sidecar B -> a grpc-js app (or a node:http2 one).
// Synchronised on events (a message received, a status, the app's handler cancelled, B's stream
// to the app closed), never on time.
import * as grpc from "@grpc/grpc-js"
import { subscribe, unsubscribe } from "node:diagnostics_channel"
import * as http from "node:http"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { AbortListener } from "../../src/mux/cancellation.ts"
import { type Failure, PendingOutcome } from "../../src/mux/request.ts"
import { MeshErrorCode } from "../../src/protocol/mesh.ts"
import { AppH2Leg } from "../../src/sidecar/appH2.ts"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const method = (name: string, requestStream: boolean, responseStream: boolean) => rawMethod("demo.Inventory", name, requestStream, responseStream)
/**
 * Watch sends two messages and then nothing (until told to end); Echo answers; Gather answers each call with its message's size once four calls came (a burst served
 * only if all four are taken at once); Collect answers nothing (its caller's
 * messages are counted).
 */
const METHODS = {
  watch: method("Watch", false, true),
  echo: method("Echo", false, false),
  gather: method("Gather", false, false),
  collect: method("Collect", true, false)
}
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")
/** Far longer than any test: a stream ends only as the test ends it. */
const LONG = 120_000

interface Outcome {
  readonly code: number
  readonly hop: string | undefined
}

/** The calls the app is serving: each Watch and Collect as it started, its end (the app's) and whether grpc-js saw it cancelled. */
class AppCalls {
  readonly started: Array<{ readonly path: string; readonly end: () => void; readonly cancelled: Promise<void> }> = []
  /** Gather's calls waiting for the fourth. */
  readonly gathered: Array<() => void> = []
  /** Messages Collect's calls received, and who waits for a count of them. */
  collected = 0
  private collectWaiters: Array<{ readonly count: number; readonly resolve: () => void }> = []

  collect(): void {
    this.collected++
    this.collectWaiters = this.collectWaiters.filter((w) => (w.count <= this.collected ? (w.resolve(), false) : true))
  }

  /** Resolves once Collect's calls received `count` messages in all. */
  collectedAtLeast(count: number): Promise<void> {
    return count <= this.collected ? Promise.resolve() : new Promise((resolve) => this.collectWaiters.push({ count, resolve }))
  }

  track(path: string, call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerReadableStream<Buffer, Buffer>, end: () => void): void {
    const cancelled = new Promise<void>((resolve) => call.on("cancelled", () => resolve()))
    this.started.push({ path, end, cancelled })
  }
}

const startApp = async (cleanup: Cleanup, calls: AppCalls): Promise<number> => {
  const server = new grpc.Server()
  server.addService(METHODS, {
    watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      calls.track(METHODS.watch.path, call, () => call.end())
      call.write(Buffer.from("a"))
      call.write(Buffer.from("b"))
    },
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
    gather: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      calls.gathered.push(() => callback(null, Buffer.from(String(call.request.length))))
      if (calls.gathered.length === 4) calls.gathered.forEach((answer) => answer())
    },
    collect: (call: grpc.ServerReadableStream<Buffer, Buffer>) => {
      calls.track(METHODS.collect.path, call, () => {})
      call.on("data", () => calls.collect())
    }
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
  )
  cleanup.add(() => server.forceShutdown())
  return port
}

/**
 * The next close of a stream from B at the app at `port` (its HTTP/2 server's, node's channel).
 * B's own HTTP/2 gives a stream's place back in the very call that ends the stream at B, before
 * anything of that end leaves B: its reset (a cancel, a deadline) reaches the app after it, and the
 * caller hears of an end the app made (its reset, its trailers, its lost session) after it too. So
 * the app's close and the caller's outcome, both awaited, follow B's place coming back.
 * (B's leg on node:http2 was watched on node's client channel: node closed its streams later.)
 * Ask before doing what closes it.
 */
const appStreamCloses = (cleanup: Cleanup, port: number): (() => Promise<void>) => {
  let waiters: Array<() => void> = []
  const onClose = (message: unknown) => {
    const stream = (message as { readonly stream: http2.ServerHttp2Stream }).stream
    if (stream.session?.socket?.localPort !== port || waiters.length === 0) return
    const current = waiters
    waiters = []
    current.forEach((resolve) => resolve())
  }
  subscribe("http2.server.stream.close", onClose)
  cleanup.add(() => unsubscribe("http2.server.stream.close", onClose))
  return () => withTimeout(new Promise<void>((resolve) => waiters.push(resolve)), 10_000, "a stream to the app to close")
}

/** A call's end: its status code and the hop B named, if it failed. */
const outcomeOf = (call: grpc.ClientReadableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>): Promise<Outcome> =>
  new Promise((resolve) => {
    call.on("error", () => {})
    call.on("status", (status: grpc.StatusObject) => resolve({ code: status.code, hop: status.metadata.get("x-iip-mesh-error")[0]?.toString() }))
  })

/** A watch that streams ("streaming": its two messages came) or ended first ("<code> <hop>"). */
const streamsOrEnds = (w: { readonly first: Promise<Array<string>>; readonly outcome: Promise<Outcome> }): Promise<string> =>
  Promise.race([w.first.then(() => "streaming"), w.outcome.then((o) => `${o.code} ${o.hop}`)])

/** Resolves with the first `count` messages the call receives (their text). */
const messages = (call: NodeJS.EventEmitter, count: number): Promise<Array<string>> =>
  new Promise((resolve) => {
    const seen: Array<string> = []
    const onData = (message: Buffer) => {
      seen.push(message.toString())
      if (seen.length === count) {
        call.off("data", onData)
        resolve(seen)
      }
    }
    call.on("data", onData)
  })

describe("long-lived calls to an h2c app hold half its places at most", () => {
  let cleanup: Cleanup
  let calls: AppCalls
  let b: RunningSidecar
  let client: grpc.Client
  let nextClose: () => Promise<void>
  beforeEach(async () => {
    cleanup = new Cleanup()
    calls = new AppCalls()
    const port = await startApp(cleanup, calls)
    nextClose = appStreamCloses(cleanup, port)
    b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 4, tracing: false }))
    // A's own bound on a call (10 s in the harness) would end the streams: they last as long as the test.
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: LONG, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    client = new InventoryClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    cleanup.add(() => client.close())
  })
  afterEach(() => cleanup.run())

  const watch = () => {
    const call = client.makeServerStreamRequest(METHODS.watch.path, identity, identity, Buffer.from("w"), new grpc.Metadata(), { deadline: Date.now() + LONG })
    cleanup.add(() => call.cancel())
    return { call, first: messages(call, 2), outcome: outcomeOf(call) }
  }
  const echo = (text: string, deadlineMs: number) =>
    new Promise<string>((resolve) =>
      client.makeUnaryRequest(METHODS.echo.path, identity, identity, Buffer.from(text), new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (error, answer) =>
        resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))
  const refusedCount = async () => value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_app_long_streams_refused_total")

  /** Watches opened one after another, each only once its two messages came (so B holds it, and knows the method streams). */
  const openWatches = async (count: number) => {
    const open: Array<ReturnType<typeof watch>> = []
    for (let i = 0; i < count; i++) {
      const next = watch()
      expect(await withTimeout(next.first, 10_000, `watch ${i}'s messages`)).toStrictEqual(["a", "b"])
      open.push(next)
    }
    return open
  }

  it("server streams that never end: 2 of the 4 places at most, the next refused UNAVAILABLE overloaded at once and counted; unary calls are answered beside them", async () => {
    await openWatches(1)
    // Three more at once; once each streams or has ended, unary calls: before, the three took the
    // three places left and the unary calls waited out their 3 s deadline (DEADLINE_EXCEEDED).
    const more = [watch(), watch(), watch()]
    const watches = await withTimeout(Promise.all(more.map(streamsOrEnds)), 10_000, "the three watches to stream or end")
    const unary = await withTimeout(Promise.all(["u0", "u1", "u2", "u3"].map((text) => echo(text, 3000))), 10_000, "the unary calls")
    expect(unary).toStrictEqual(["u0", "u1", "u2", "u3"])
    expect(watches).toStrictEqual(["streaming", "14 inbound; reason=overloaded", "14 inbound; reason=overloaded"])
    expect(await refusedCount()).toBe(2)
    // Not processed: the app saw two watches only.
    expect(calls.started.map((c) => c.path)).toStrictEqual([METHODS.watch.path, METHODS.watch.path])
  })

  it("a place comes back when the caller cancels its stream", async () => {
    const [first] = await openWatches(2)
    const closed = nextClose()
    first!.call.cancel()
    expect((await withTimeout(first!.outcome, 5000, "the cancelled watch's status")).code).toBe(grpc.status.CANCELLED)
    // B reset the app's stream (the app sees it cancelled) and gave its place back as node closed it.
    await withTimeout(calls.started[0]!.cancelled, 5000, "the app to see the cancel")
    await closed
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "a new watch")).toBe("streaming")
    const past = watch()
    expect(await withTimeout(past.outcome, 10_000, "the watch past the share")).toStrictEqual({ code: grpc.status.UNAVAILABLE, hop: "inbound; reason=overloaded" })
    expect(await refusedCount()).toBe(1)
  })

  it("a place comes back when the app ends its stream", async () => {
    const [first] = await openWatches(2)
    const closed = nextClose()
    calls.started[0]!.end()
    expect(await withTimeout(first!.outcome, 5000, "the ended watch's status")).toStrictEqual({ code: grpc.status.OK, hop: undefined })
    await closed
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "a new watch")).toBe("streaming")
    expect((await withTimeout(watch().outcome, 10_000, "the watch past the share")).code).toBe(grpc.status.UNAVAILABLE)
  })

  it("a client stream counts from its request's second message: with a watch open and one such call, the next watch is refused; unary calls are answered", async () => {
    await openWatches(1)
    // Collect answers nothing: only its request's messages show that the call streams.
    const collect = client.makeClientStreamRequest(METHODS.collect.path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + LONG }, () => {})
    cleanup.add(() => collect.cancel())
    collect.on("error", () => {})
    collect.write(Buffer.from("m1"))
    collect.write(Buffer.from("m2"))
    // B counted it as it wrote the second message to the app (before the app read it).
    await withTimeout(calls.collectedAtLeast(2), 10_000, "the collect's two messages")
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the watch past the share")).toBe("14 inbound; reason=overloaded")
    expect(await withTimeout(Promise.all([echo("u0", 3000), echo("u1", 3000)]), 10_000, "the unary calls")).toStrictEqual(["u0", "u1"])
    expect(await refusedCount()).toBe(1)
  })

  it("client streams to methods the app does not have (UNIMPLEMENTED) teach B nothing: 1,100 of them, two messages each, do not flush the methods it knows stream (1,024 kept)", async () => {
    // Watch learned, then its places given back: the invented calls below have the share's room,
    // so B cuts none (a cut resets the app's stream, and past about 1,000 resets at once node's
    // server, nghttp2's rapid-reset bound, ends B's session to it, the watches with it).
    for (const open of await openWatches(2)) {
      const closed = nextClose()
      open.call.cancel()
      await closed
    }
    // Invented paths, two at a time: had B learned each as streaming from its request, the 1,024
    // it keeps would have been forgotten (Watch with them), and a watch taken as an ordinary call.
    const invented = (i: number) =>
      new Promise<number>((resolve) => {
        const call = client.makeClientStreamRequest(`/demo.Inventory/Invented${i}`, identity, identity, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, () => {})
        call.on("status", (status: grpc.StatusObject) => resolve(status.code))
        call.write(Buffer.from("m1"))
        call.write(Buffer.from("m2"))
      })
    for (let i = 0; i < 1100; i += 2) {
      const codes = await withTimeout(Promise.all([invented(i), invented(i + 1)]), 10_000, `invented calls ${i}`)
      expect(codes).toStrictEqual([grpc.status.UNIMPLEMENTED, grpc.status.UNIMPLEMENTED])
    }
    // Still known to stream: two watches take the share, the third is refused before the app sees it
    // (a watch taken as an ordinary call reaches the app, and is cut only at its second message).
    await openWatches(2)
    const seen = calls.started.length
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the watch past the share")).toBe("14 inbound; reason=overloaded")
    expect(calls.started).toHaveLength(seen)
  })

  it("a unary method a caller sent two messages (the app refuses the call, trailers-only) is not learned as streaming: four calls of it at once all taken", async () => {
    const poison = await withTimeout(new Promise<number>((resolve) => {
      const call = client.makeClientStreamRequest(METHODS.gather.path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, () => {})
      call.on("status", (status: grpc.StatusObject) => resolve(status.code))
      // 80 KB in all: past A's 64 KiB, the body streams to B (a whole one is not looked at).
      call.write(Buffer.alloc(40_000, 1))
      call.write(Buffer.alloc(40_000, 2))
      call.end()
    }), 10_000, "the two-message call's status")
    expect(poison).not.toBe(grpc.status.OK)
    const gather = () =>
      new Promise<string>((resolve) =>
        client.makeUnaryRequest(METHODS.gather.path, identity, identity, Buffer.from("g"), new grpc.Metadata(), { deadline: Date.now() + 5000 }, (error, answer) =>
          resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))
    expect(await withTimeout(Promise.all([gather(), gather(), gather(), gather()]), 10_000, "the gathered calls")).toStrictEqual(["1", "1", "1", "1"])
    expect(await refusedCount()).toBe(0)
  })

  it("unary calls whose one message is past A's 64 KiB (their body streams) are ordinary calls: a burst of four takes all 4 places, none refused", async () => {
    // Before, each counted as long-lived from its start: the third and fourth refused UNAVAILABLE
    // at once, not processed, and the two taken waited for the four the app gathers.
    const upload = () =>
      new Promise<string>((resolve) =>
        client.makeUnaryRequest(METHODS.gather.path, identity, identity, Buffer.alloc(100_000, 1), new grpc.Metadata(), { deadline: Date.now() + 5000 }, (error, answer) =>
          resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))
    const answers = await withTimeout(Promise.all([upload(), upload(), upload(), upload()]), 10_000, "the uploads")
    expect(answers).toStrictEqual(["100000", "100000", "100000", "100000"])
    expect(await refusedCount()).toBe(0)
  })
})

/**
 * The other ends, event streams and a method's first call, from a node:http2 app the test drives
 * (grpc-js's server cannot reset one stream or lose its session on demand): B's limit of 2 places,
 * so the share is 1. Watch answers a head and two messages, then holds the stream; /events an event
 * and holds it; Echo and /plain answer whole.
 */
describe("a node:http2 app, a share of one place", () => {
  let cleanup: Cleanup
  let client: grpc.Client
  let nextClose: () => Promise<void>
  let outboundPort: number
  const held: Array<http2.ServerHttp2Stream> = []
  const sessions: Array<http2.ServerHttp2Session> = []
  beforeEach(async () => {
    cleanup = new Cleanup()
    held.length = 0
    sessions.length = 0
    const app = http2.createServer()
    app.on("session", (session) => sessions.push(session))
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      const message = Buffer.from([0, 0, 0, 0, 1, 0x61])
      if (headers[":path"] === METHODS.echo.path) {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
        return void stream.end(message)
      }
      if (headers[":path"] === "/plain") return void stream.respond({ ":status": 200 }, { endStream: true })
      held.push(stream)
      if (headers[":path"] === "/events") {
        stream.respond({ ":status": 200, "content-type": "text/event-stream" })
        return void stream.write("data: x\n\n")
      }
      stream.respond({ ":status": 200, "content-type": "application/grpc" })
      stream.write(Buffer.concat([message, message]))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const port = (app.address() as net.AddressInfo).port
    nextClose = appStreamCloses(cleanup, port)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 2, tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: LONG, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    outboundPort = a.outboundPort
    client = new InventoryClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    cleanup.add(() => client.close())
  })
  afterEach(() => cleanup.run())

  /** A GET through A (HTTP/1.1): its status and B's error header once its first bytes came. */
  const get = (path: string, accept: string) =>
    withTimeout(new Promise<string>((resolve, reject) => {
      const req = http.request({ host: LOOPBACK, port: outboundPort, path, headers: { host: "inventory", accept }, agent: false })
      cleanup.add(() => req.destroy())
      req.on("error", reject)
      req.on("response", (res) => {
        const said = `${res.statusCode} ${res.headers["x-iip-mesh-error"] ?? "-"}`
        res.once("data", () => resolve(said))
        res.once("end", () => resolve(said))
        res.resume()
      })
      req.end()
    }), 10_000, `GET ${path}`)

  const watch = (deadlineMs = LONG) => {
    const call = client.makeServerStreamRequest(METHODS.watch.path, identity, identity, Buffer.from("w"), new grpc.Metadata(), { deadline: Date.now() + deadlineMs })
    cleanup.add(() => call.cancel())
    return { call, first: messages(call, 2), outcome: outcomeOf(call) }
  }
  /** One watch holds the share (its two messages came), the next is refused; `end` ends the first; then a new one is taken and the one after it refused. */
  const endsAndComesBack = async (end: (first: ReturnType<typeof watch>) => void, deadlineMs = LONG) => {
    const first = watch(deadlineMs)
    expect(await withTimeout(first.first, 10_000, "the first watch's messages")).toStrictEqual(["a", "a"])
    expect(await withTimeout(watch().outcome, 10_000, "the watch past the share")).toStrictEqual({ code: grpc.status.UNAVAILABLE, hop: "inbound; reason=overloaded" })
    const closed = nextClose()
    end(first)
    const ended = await withTimeout(first.outcome, 10_000, "the first watch's end")
    await closed
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "a new watch")).toBe("streaming")
    expect(await withTimeout(watch().outcome, 10_000, "the next watch past the share")).toStrictEqual({ code: grpc.status.UNAVAILABLE, hop: "inbound; reason=overloaded" })
    return ended
  }

  it("the app resets the stream", async () => {
    const ended = await endsAndComesBack(() => held[0]!.close(http2.constants.NGHTTP2_INTERNAL_ERROR))
    expect(ended.code).not.toBe(grpc.status.OK)
  })

  it("the app's session is lost (its connection closed)", async () => {
    const ended = await endsAndComesBack(() => sessions[0]!.destroy())
    expect(ended.code).not.toBe(grpc.status.OK)
  })

  it("the call's deadline passes", async () => {
    const ended = await endsAndComesBack(() => {}, 1000)
    expect(ended.code).toBe(grpc.status.DEADLINE_EXCEEDED)
  })

  it("event streams to an h2c app take the same share: with a watch open, one is refused 503 overloaded; a plain GET is answered", async () => {
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the watch")).toBe("streaming")
    expect(await get("/events", "Text/Event-Stream")).toBe("503 inbound; reason=overloaded")
    expect(await get("/plain", "*/*")).toBe("200 -")
  })

  it("a method's first call is not known to stream: taken as an ordinary call, cut as its second message shows it streaming past the share (the app saw it); the next is refused at its start", async () => {
    expect(await get("/events", "text/event-stream")).toBe("200 -")
    // Before, taken past the share and kept: with the event stream, both places held.
    // The app saw it: RESOURCE_EXHAUSTED, never retried; the next, refused unseen, UNAVAILABLE.
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the method's first watch")).toBe("8 inbound; reason=overloaded")
    expect(held).toHaveLength(2)
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the second watch")).toBe("14 inbound; reason=overloaded")
    // Learned from the first: refused before the app saw it.
    expect(held).toHaveLength(2)
    expect(await get("/plain", "*/*")).toBe("200 -")
  })

  it("a method's first call within the share is counted as its second message shows it: the next event stream is refused", async () => {
    expect(await withTimeout(streamsOrEnds(watch()), 10_000, "the method's first watch")).toBe("streaming")
    expect(await get("/events", "text/event-stream")).toBe("503 inbound; reason=overloaded")
  })
})

/**
 * The leg itself (appH2.ts), for long-lived calls that wait for a place: read at once from the
 * leg's own count of refusals (nothing of it is seen from outside B: the app never saw the call).
 * An app that holds every stream unanswered, but Echo's, which it answers whole.
 */
describe("the h2c leg: long-lived calls waiting for a place", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** The app (its SETTINGS `settings`), a leg to it of `maxStreams` places, and `send`: a call through the leg as inbound.ts makes it, and its caller's cancel. */
  const legTo = async (settings: http2.Settings, maxStreams: number) => {
    const app = http2.createServer({ settings })
    const sessions: Array<http2.ServerHttp2Session> = []
    const seen: Array<string> = []
    app.on("session", (session) => sessions.push(session))
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      seen.push(headers[":path"]!)
      if (headers[":path"] !== METHODS.echo.path) return
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
      stream.end(Buffer.from([0, 0, 0, 0, 1, 0x61]))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const leg = new AppH2Leg(LOOPBACK, (app.address() as net.AddressInfo).port, undefined, 5000, maxStreams)
    cleanup.add(() => leg.close())
    const tracing = makeTracing({ service: "inventory", store: new TraceStore(), env: {}, enabled: false })
    const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
    const grpcHead: ReadonlyArray<readonly [string, string]> = [["content-type", "application/grpc"]]
    const send = (path: string) => {
      const listeners = new Set<AbortListener>()
      const cancel = { aborted: false, addEventListener: (_: "abort", l: AbortListener) => void listeners.add(l), removeEventListener: (_: "abort", l: AbortListener) => void listeners.delete(l) }
      const pending = new PendingOutcome()
      leg.forward({ method: "POST", path, authority: "inventory", headers: grpcHead, body: Buffer.alloc(5), timeLeftMs: LONG, maxMetaBytes: 8192, plain: false, trailers: true },
        new InboundObservation(telemetry, "inventory", "POST", path, grpcHead, "127.0.0.1:40000"), cancel, pending)
      return { pending, cancel: () => [...listeners].forEach((l) => l.handleEvent()) }
    }
    leg.noteStreaming(METHODS.watch.path)
    return { leg, send, seen }
  }

  it("one leaving the line (its caller's cancel) gives its share back: the next long-lived call waits in its turn, not refused (2 places, share 1)", async () => {
    const { leg, send } = await legTo({}, 2)
    // Two unary calls take both places (the second waits for the new session's SETTINGS, or holds one).
    send(METHODS.watch.path.replace("Watch", "Hold"))
    send(METHODS.watch.path.replace("Watch", "Hold"))
    const waiting = send(METHODS.watch.path)
    expect(leg.waitingStreams).toBeGreaterThanOrEqual(1)
    const refused = send(METHODS.watch.path)
    expect(leg.longStreamsRefused).toBe(1)
    expect(((await withTimeout(Promise.resolve(refused.pending), 5000, "the refusal")) as Failure).code).toBe(MeshErrorCode.overloaded)
    waiting.cancel()
    expect(((await withTimeout(Promise.resolve(waiting.pending), 5000, "the cancelled call's outcome")) as Failure).code).toBe(MeshErrorCode.cancelled)
    // Its share came back with it: the next watch waits in its turn.
    send(METHODS.watch.path)
    expect(leg.longStreamsRefused).toBe(1)
    send(METHODS.watch.path)
    expect(leg.longStreamsRefused).toBe(2)
  })

  it("a burst before the app's SETTINGS (its 4 places, B's 1,024): those past the share of 4 are refused as the SETTINGS come, not left in the line ahead of a unary call", async () => {
    const { leg, send, seen } = await legTo({ maxConcurrentStreams: 4 }, 1024)
    // Before its SETTINGS the share is half of B's 1,024: all six taken, one open (it makes the session), five waiting.
    for (let i = 0; i < 6; i++) send(METHODS.watch.path)
    expect(leg.longStreamsRefused).toBe(0)
    // Before, the SETTINGS opened three more (4 watches on 4 places) and left two waiting, ahead of
    // this call until a watch ended: it waited out its deadline, every place the app has held.
    const unary = send(METHODS.echo.path)
    const answer = await withTimeout(Promise.resolve(unary.pending), 5000, "the unary call's answer")
    expect((answer as { readonly _tag: string })._tag).toBe("Reply")
    expect(leg.longStreamsRefused).toBe(4)
    // Not processed: the app saw two watches (the call that made the session, and one as the
    // SETTINGS came: the share's two places), then the unary call.
    expect(seen).toStrictEqual([METHODS.watch.path, METHODS.watch.path, METHODS.echo.path])
  })
})

describe("the methods B learned stream", () => {
  it("a method already learned, seen streaming again with the set full, keeps the others (the set is emptied only to make room for a new one)", async () => {
    // No app: the leg makes no session until a call is forwarded.
    const leg = new AppH2Leg(LOOPBACK, 1, undefined, 5000, 16)
    try {
      for (let i = 0; i < 1024; i++) leg.noteStreaming(`/svc.S/M${i}`)
      leg.noteStreaming("/svc.S/M7")
      expect(leg.streams("/svc.S/M0")).toBe(true)
      expect(leg.streams("/svc.S/M1023")).toBe(true)
      leg.noteStreaming("/svc.S/New")
      expect(leg.streams("/svc.S/New")).toBe(true)
      expect(leg.streams("/svc.S/M0")).toBe(false)
    } finally {
      await leg.close()
    }
  })
})
