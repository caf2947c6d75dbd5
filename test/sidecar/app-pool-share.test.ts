// Each peer's share of the inbound side's app pool (appPool.ts, poolPeers.ts), against a real
// node:http app on loopback: a peer alone may use every socket; when a socket frees, a waiting
// request of a peer under its share goes ahead of older ones of a peer at its share; a socket held
// past a share by an answer nobody reads is taken back for another peer's waiting request, and
// never one within a share or one whose answer flows; peers are told apart by verified identity,
// else by the host of their address.
import * as http from "node:http"
import type * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { type AppController, AppPool, type AppPoolHandler, PoolShareReclaimed } from "../../src/sidecar/appPool.ts"
import { type PoolPeer, PoolPeers } from "../../src/sidecar/poolPeers.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"

interface Run {
  controller: AppController | undefined
  status: number
  bytes: number
  /** The answer's end, or the error the handler was told of. */
  readonly done: Promise<Error | undefined>
}

/** One exchange; `pauseAtFirstByte`: its reader takes nothing once its answer begins (a stalled caller). */
const dispatch = (pool: AppPool, path: string, peer: PoolPeer | undefined, pauseAtFirstByte = false): Run => {
  let finish: (error: Error | undefined) => void = () => {}
  const run: Run = { controller: undefined, status: 0, bytes: 0, done: new Promise((resolve) => (finish = resolve)) }
  const handler: AppPoolHandler = {
    onRequestStart: (c) => void (run.controller = c),
    onResponseStart: (_c, status) => void (run.status = status),
    onResponseData: (c, chunk) => {
      run.bytes += chunk.length
      if (pauseAtFirstByte && !c.paused) c.pause()
    },
    onResponseEnd: () => finish(undefined),
    onResponseError: (_c, error) => finish(error)
  }
  pool.dispatch({ method: "GET", path, headers: [], body: Buffer.alloc(0) }, handler, peer)
  return run
}

/** A node:http app that holds each request until the test answers it: small (`answer`) or endless (`stream`). */
const startApp = async (cleanup: Cleanup) => {
  const held = new Map<string, http.ServerResponse>()
  const order: Array<string> = []
  const server = http.createServer((req, res) => {
    order.push(req.url!)
    held.set(req.url!, res)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const answer = (path: string) => {
    held.get(path)!.end("ok")
    held.delete(path)
  }
  /** Writes 64 KiB chunks while the socket takes them, until the response closes. */
  const stream = (path: string) => {
    const res = held.get(path)!
    res.writeHead(200)
    const chunk = Buffer.alloc(64 * 1024, 97)
    const pump = () => {
      while (!res.destroyed) if (!res.write(chunk)) return void res.once("drain", pump)
    }
    pump()
  }
  return { port: (server.address() as net.AddressInfo).port, order, answer, stream, holds: (path: string) => held.has(path) }
}

describe("each peer's share of the app pool", () => {
  // run() empties it: one for the whole file, emptied after each test.
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const poolFor = (port: number, size: number) => {
    const pool = new AppPool("127.0.0.1", port, size)
    cleanup.add(() => pool.destroy())
    return pool
  }

  it("a peer alone takes every socket of the pool, past its share (half): none of its requests waits or fails", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 4)
    const peers = new PoolPeers()
    const runs = ["/1", "/2", "/3", "/4"].map((path) => dispatch(pool, path, peers.of("10.0.0.1:40000", undefined)))
    await waitFor(() => app.order.length === 4, 5_000, "all four at the app at once")
    expect(pool.waitingCount).toBe(0)
    for (const path of ["/1", "/2", "/3", "/4"]) app.answer(path)
    expect(await Promise.all(runs.map((r) => r.done))).toEqual([undefined, undefined, undefined, undefined])
    expect(runs.map((r) => r.status)).toEqual([200, 200, 200, 200])
  })

  it("a freed socket goes to the first waiting request of a peer under its share, ahead of older ones of a peer at its share; then in order", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    const peers = new PoolPeers()
    const x = peers.of("10.0.0.1:40000", undefined)
    const y = peers.of("10.0.0.2:40000", undefined)
    const runs = [dispatch(pool, "/x1", x), dispatch(pool, "/x2", x), dispatch(pool, "/x3", x), dispatch(pool, "/x4", x)]
    await waitFor(() => app.order.length === 2, 5_000, "x1 and x2 on the pool's two sockets")
    runs.push(dispatch(pool, "/y1", y))
    expect([x.held, x.waiting, y.held, y.waiting, pool.waitingCount]).toEqual([2, 2, 0, 1, 3])
    app.answer("/x1")
    await waitFor(() => app.order.length === 3, 5_000, "the freed socket's next request")
    expect(app.order[2]).toBe("/y1")
    expect(pool.sharePassed).toBe(1)
    // Each peer at its share (one): the rest in order.
    app.answer("/x2")
    await waitFor(() => app.order.length === 4, 5_000, "the next")
    app.answer("/y1")
    await waitFor(() => app.order.length === 5, 5_000, "the last")
    expect(app.order).toEqual(["/x1", "/x2", "/y1", "/x3", "/x4"])
    app.answer("/x3")
    app.answer("/x4")
    expect(await Promise.all(runs.map((r) => r.done))).toEqual([undefined, undefined, undefined, undefined, undefined])
    expect([x.held, x.waiting, y.held, y.waiting, pool.waitingCount]).toEqual([0, 0, 0, 0, 0])
  })

  it("freed sockets pass over any number of requests of a peer at its share, to the peers under theirs in turn, each peer's own in order", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    const peers = new PoolPeers()
    const [w, x, y, z] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map((host) => peers.of(`${host}:40000`, undefined))
    dispatch(pool, "/xa", x)
    dispatch(pool, "/w0", w)
    await waitFor(() => app.order.length === 2, 5_000, "xa and w0 on the pool's two sockets")
    // x at its share (one) with many waiting ahead: each pass used to walk them all.
    for (let i = 1; i <= 1000; i++) dispatch(pool, `/x${i}`, x)
    for (const [peer, path] of [[y, "/y1"], [y, "/y2"], [z, "/z1"], [z, "/z2"]] as const) dispatch(pool, path, peer)
    for (const [path, next] of [["/w0", 3], ["/y1", 4], ["/z1", 5], ["/y2", 6], ["/z2", 7]] as const) {
      app.answer(path)
      await waitFor(() => app.order.length === next, 5_000, `the socket ${path} freed to go on`)
    }
    // y and z in turn (not all of y's first, the older), each in its own order; x's keep theirs.
    expect(app.order).toEqual(["/xa", "/w0", "/y1", "/z1", "/y2", "/z2", "/x1"])
    expect(pool.sharePassed).toBe(4)
    expect([y.waiting, z.waiting, x.waiting, pool.waitingCount]).toEqual([0, 0, 999, 999])
    app.answer("/xa")
    await waitFor(() => app.order.length === 8, 5_000, "x's next")
    expect(app.order[7]).toBe("/x2")
  })

  it("while another peer's request waits, a socket held past a peer's share by an answer it does not read is taken back (PoolShareReclaimed); one the app has not answered yet is not", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    const peers = new PoolPeers()
    const x = peers.of("10.0.0.1:40000", undefined)
    const stalled = dispatch(pool, "/stalled", x, true)
    const slow = dispatch(pool, "/slow", x)
    await waitFor(() => app.order.length === 2, 5_000, "both of x's on the pool's two sockets")
    app.stream("/stalled")
    await waitFor(() => stalled.controller?.paused === true, 5_000, "the stalled answer to pause")
    const waiting = dispatch(pool, "/y1", peers.of("10.0.0.2:40000", undefined))
    const error = await stalled.done
    expect(error).toBeInstanceOf(PoolShareReclaimed)
    expect(error!.message).toMatch(/2 of the 2 pool sockets .* held by 10\.0\.0\.1, past its share of 1/)
    expect(pool.shareReclaimed).toBe(1)
    await waitFor(() => app.order.length === 3, 5_000, "y1 on the socket taken back")
    expect(app.order[2]).toBe("/y1")
    app.answer("/y1")
    expect(await waiting.done).toBeUndefined()
    // x's other answer (the app slow, not the reader) kept its socket throughout.
    expect(app.holds("/slow")).toBe(true)
    app.answer("/slow")
    expect(await slow.done).toBeUndefined()
  })

  it("no socket is taken back from a peer within its share, stalled or not: a waiting request ends at its own deadline", async () => {
    const app = await startApp(cleanup)
    const pool = poolFor(app.port, 2)
    const peers = new PoolPeers()
    const x = dispatch(pool, "/x", peers.of("10.0.0.1:40000", undefined), true)
    const y = dispatch(pool, "/y", peers.of("10.0.0.2:40000", undefined), true)
    await waitFor(() => app.order.length === 2, 5_000, "x and y on the pool's two sockets")
    app.stream("/x")
    app.stream("/y")
    await waitFor(() => x.controller?.paused === true && y.controller?.paused === true, 5_000, "both answers to pause")
    const z = dispatch(pool, "/z", peers.of("10.0.0.3:40000", undefined))
    // Its deadline (the handler's, as appExchange.ts arms one): two and a half looks for a stalled socket.
    const deadline = setTimeout(() => z.controller!.abort(new Error("deadline")), 2_500)
    cleanup.add(() => clearTimeout(deadline))
    expect((await z.done)?.message).toBe("deadline")
    expect(pool.shareReclaimed).toBe(0)
    expect(pool.waitingCount).toBe(0)
    expect(app.order).toEqual(["/x", "/y"])
    x.controller!.abort(new Error("done"))
    y.controller!.abort(new Error("done"))
    expect([(await x.done)?.message, (await y.done)?.message]).toEqual(["done", "done"])
  })

  it("peers: one record per host whatever the port (IPv4 and IPv6), or per verified identity; idle ones kept for the next request", () => {
    const peers = new PoolPeers()
    const a = peers.of("10.0.0.1:40000", undefined)
    expect(peers.of("10.0.0.1:40001", undefined)).toBe(a)
    expect(peers.of("10.0.0.2:40000", undefined)).not.toBe(a)
    expect(a.key).toBe("10.0.0.1")
    expect(peers.of("::1:40000", undefined).key).toBe("::1")
    const store = peers.of("10.0.0.1:40000", "spiffe://iip-mesh.local/svc/store")
    expect(store.key).toBe("spiffe://iip-mesh.local/svc/store")
    expect(peers.of("10.0.0.9:40000", "spiffe://iip-mesh.local/svc/store")).toBe(store)
    expect(peers.of("10.0.0.1:40000", undefined)).toBe(a)
  })
})
