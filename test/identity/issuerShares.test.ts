// One peer against the issuer's shared resources: its signing slots, its connections and the TLS
// handshakes in flight. The attacker is a raw TLS/TCP client from 127.0.0.2 (speaking bytes, so it
// can pipeline as our client never would); its signings are held at a Kubernetes API server that
// answers TokenReviews only when the test lets it. An honest sidecar (our own signer, from
// 127.0.0.1, with a join token) must still be signed while the attacker holds all it can; what the
// attacker is refused comes back as a typed answer (429 too-many-requests) and is counted, the
// connections past its share are closed and counted, and its refusals cannot flood the log.
import * as http from "node:http"
import * as net from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import { IssuerRefused, issuerSigner } from "../../src/identity/signers.ts"
import { audience, joinTokensNow, makeIssuingCa, type RunningIssuer, startIssuer, trustDomain } from "../support/identityTest.ts"

const joinToken = "h".repeat(40)
const attackerAddress = "127.0.0.2"

let ca: Awaited<ReturnType<typeof makeIssuingCa>>
let attackBody: string
beforeAll(async () => {
  ca = await makeIssuingCa()
  const pair = await generateKeyPair()
  attackBody = JSON.stringify({ csr: await createCertificateRequest(pair.keys, undefined), proof: { kind: "kubernetes", token: "held" } })
})

const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A Kubernetes API server that holds every TokenReview until `release` (then: not authenticated). */
const holdingApiServer = async () => {
  const held: Array<http.ServerResponse> = []
  const server = http.createServer((request, response) => {
    request.resume()
    request.on("end", () => held.push(response))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const release = () => {
    for (const response of held.splice(0)) {
      response.writeHead(201, { "content-type": "application/json" })
      response.end(JSON.stringify({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", status: { authenticated: false, error: "released" } }))
    }
  }
  cleanups.push(() => {
    release()
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, held, release }
}

/** Handshakes a source may start, high enough that the shares, not the rate (issuerHandshakeRate.test.ts), are what these meet. */
const unlimitedHandshakes = { handshakeRatePerSource: 1_000_000, handshakeBurstPerSource: 1_000_000 }

const startHeldIssuer = async (options: Parameters<typeof startIssuer>[1] = {}, reviewTimeoutMs = 60_000) => {
  const api = await holdingApiServer()
  const running = await startIssuer(ca, {
    joinTokens: joinTokensNow(`${joinToken} catalog\n`),
    ...unlimitedHandshakes,
    tokenReview: { apiUrl: api.url, ca: undefined, bearerToken: () => "issuer-own-token", audience, timeoutMs: reviewTimeoutMs },
    ...options
  })
  cleanups.push(() => running.stop())
  return { api, running }
}

/** Resolves when `check` holds; rejects after `ms` (a bound, not a pause), saying what `show` gives. */
const until = (check: () => boolean, ms = 10_000, show: () => unknown = () => "") =>
  new Promise<void>((resolve, reject) => {
    const started = Date.now()
    const poll = () => (check() ? resolve() : Date.now() - started > ms ? reject(new Error(`timed out waiting ${JSON.stringify(show())}`)) : setTimeout(poll, 5))
    poll()
  })

const signRequest = (body: string) => `POST /v1/sign HTTP/1.1\r\nhost: issuer\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`

/** A raw TLS client from the attacker's address; `text` is everything it has read. */
const attackerTls = (port: number) => {
  const state = { text: "", closed: false, secured: false }
  const tcp = net.connect({ host: "127.0.0.1", port, localAddress: attackerAddress })
  tcp.on("error", () => {})
  const socket = tls.connect({ socket: tcp, ca: ca.trustBundlePem, checkServerIdentity: () => undefined })
  socket.setEncoding("utf8")
  socket.on("data", (chunk: string) => (state.text += chunk))
  socket.on("error", () => {})
  socket.on("close", () => (state.closed = true))
  cleanups.push(() => socket.destroy())
  const statuses = () => [...state.text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]))
  const secure = new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()))
  socket.once("secureConnect", () => (state.secured = true))
  return { socket, tcp, state, statuses, secure }
}

/** A raw TCP connection from the attacker's address that never starts its TLS handshake. */
const attackerTcp = (port: number) => {
  const state = { closed: false }
  const socket = net.connect({ host: "127.0.0.1", port, localAddress: attackerAddress })
  socket.on("error", () => {})
  socket.on("close", () => (state.closed = true))
  cleanups.push(() => socket.destroy())
  const connected = new Promise<void>((resolve) => socket.once("connect", () => resolve()))
  return { socket, state, connected }
}

/** Our own signer from 127.0.0.1 with a fresh key: the honest sidecar (a join token) unless told otherwise. */
const honestSign = async (running: RunningIssuer, proof: { kind: "join" | "kubernetes"; token: string } = { kind: "join", token: joinToken }) => {
  const pair = await generateKeyPair()
  const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => proof })
  return signer(await createCertificateRequest(pair.keys, undefined))
}

const refused = (running: RunningIssuer, reason: string) => (running.issuer.refused() as Record<string, number>)[reason] ?? 0

const metricsOf = (running: RunningIssuer) =>
  new Promise<string>((resolve, reject) =>
    (import("node:https")).then((https) =>
      https.get(`${running.url}/metrics`, { ca: ca.trustBundlePem, checkServerIdentity: () => undefined }, (response) => {
        let body = ""
        response.on("data", (chunk: Buffer) => (body += chunk.toString()))
        response.on("end", () => resolve(body))
      }).on("error", reject)
    ))

/** The metrics once they match `pattern` (asked again while they do not, or while the issuer has no connection free yet); rejects after `ms`. */
const metricsMatching = async (running: RunningIssuer, pattern: RegExp, ms = 5_000): Promise<string> => {
  const started = Date.now()
  for (;;) {
    const text = await metricsOf(running).catch(() => "")
    if (pattern.test(text)) return text
    if (Date.now() - started > ms) throw new Error(`metrics never matched ${pattern}: ${text}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe("issuer: one peer cannot take every signing slot", () => {
  it("one connection pipelining 64 signings holds its connection's share (4); an honest sidecar is signed meanwhile, the rest answered 429 too-many-requests and counted", async () => {
    const { api, running } = await startHeldIssuer()
    const attacker = attackerTls(running.issuer.port)
    await attacker.secure
    attacker.socket.write(signRequest(attackBody).repeat(64))
    // Every one of the 64 has been taken up: held at the API server or refused. (The refusals'
    // answers wait behind the held ones; node stops reading a connection once 16 KiB of them wait,
    // ~55 answers: the 45 KB written at once, three 16 KiB TLS records, are read before that.)
    await until(() => api.held.length + refused(running, "too-many-requests") + refused(running, "overloaded") === 64, 10_000, () => [api.held.length, running.issuer.refused()])
    expect(api.held).toHaveLength(4)
    const honest = await honestSign(running)
    expect(honest.spiffeId).toBe(`spiffe://${trustDomain}/svc/catalog`)
    // Signed while the attacker's four still wait.
    expect(api.held).toHaveLength(4)
    api.release()
    await until(() => attacker.statuses().length === 64, 10_000, () => attacker.statuses())
    const statuses = attacker.statuses()
    expect(statuses.filter((status) => status === 401)).toHaveLength(4)
    expect(statuses.filter((status) => status === 429)).toHaveLength(60)
    expect(attacker.state.text).toContain(`{"error":"too-many-requests","message":"this connection's share of signings in progress (4) is taken"}`)
    expect(attacker.state.text).toMatch(/^retry-after: 1\r$/im)
    expect(await metricsOf(running)).toMatch(/^iip_mesh_issuer_refused_total\{reason="too-many-requests"\} 60$/m)
    // Refusals a peer can repeat without end are logged, but not one line each.
    const lines = running.events.filter((e) => e.event === "identity-refused" && e.fields.reason === "too-many-requests")
    expect(lines.length).toBeGreaterThan(0)
    expect(lines.length).toBeLessThan(60)
    expect(lines[0]!.fields.remote).toBe(attackerAddress)
  })

  it("one address on 64 connections holds its share (16); an honest sidecar from another address is signed meanwhile", async () => {
    const { api, running } = await startHeldIssuer()
    const attackers = Array.from({ length: 64 }, () => attackerTls(running.issuer.port))
    await Promise.all(attackers.map((attacker) => attacker.secure))
    for (const attacker of attackers) attacker.socket.write(signRequest(attackBody))
    await until(() => api.held.length + refused(running, "too-many-requests") + refused(running, "overloaded") === 64)
    expect(api.held).toHaveLength(16)
    expect(refused(running, "too-many-requests")).toBe(48)
    expect((await honestSign(running)).spiffeId).toBe(`spiffe://${trustDomain}/svc/catalog`)
    expect(api.held).toHaveLength(16)
    // The refused learn it at once, before anything held is released.
    await until(() => attackers.filter((attacker) => attacker.statuses()[0] === 429).length === 48)
    expect(attackers.find((attacker) => attacker.statuses()[0] === 429)!.state.text).toContain(`"message":"this source's share of signings in progress (16) is taken"`)
  })
})

describe("issuer: what our client sees past its share", () => {
  it("a refusal for its address's share is an IssuerRefused 429 too-many-requests, and the slot comes back once its signing ends", async () => {
    const { api, running } = await startHeldIssuer({ maxInFlightPerSource: 1 })
    const first = honestSign(running, { kind: "kubernetes", token: "held" })
    first.catch(() => {})
    await until(() => api.held.length === 1)
    const refusal = await honestSign(running).then(() => undefined, (error: unknown) => error)
    expect(refusal).toBeInstanceOf(IssuerRefused)
    expect(refusal).toMatchObject({ status: 429, reason: "too-many-requests", detail: "this source's share of signings in progress (1) is taken", retryAfterMs: 1_000 })
    api.release()
    await expect(first).rejects.toMatchObject({ _tag: "IssuerRefused", status: 401, reason: "unauthenticated" })
    expect((await honestSign(running)).spiffeId).toBe(`spiffe://${trustDomain}/svc/catalog`)
    expect(await metricsOf(running)).toMatch(/^iip_mesh_issuer_signings_in_flight 0$/m)
  })
})

describe("issuer: one peer cannot take every connection", () => {
  it("an address holding connections mid-handshake and idle past its share is closed there; an honest sidecar still connects and is signed", async () => {
    const { running } = await startHeldIssuer({ maxConnections: 32, maxConnectionsPerSource: 8 })
    // Half never start their handshake, half finish it and send nothing.
    const raw = Array.from({ length: 16 }, () => attackerTcp(running.issuer.port))
    await Promise.all(raw.map((attacker) => attacker.connected))
    const idle = Array.from({ length: 16 }, () => attackerTls(running.issuer.port))
    await until(() => idle.every((attacker) => attacker.state.closed || attacker.state.secured))
    expect((await honestSign(running)).spiffeId).toBe(`spiffe://${trustDomain}/svc/catalog`)
    // The first 8 stay (the raw ones, accepted first); every later one was closed.
    await until(() => [...raw, ...idle].filter((attacker) => attacker.state.closed).length === 24)
    expect(raw.slice(0, 8).every((attacker) => !attacker.state.closed)).toBe(true)
    expect(await metricsOf(running)).toMatch(/^iip_mesh_issuer_connections_refused_total\{limit="per_source"\} 24$/m)
    const lines = running.events.filter((e) => e.event === "identity-connection-refused")
    expect(lines.length).toBeGreaterThan(0)
    expect(lines.length).toBeLessThan(24)
    expect(lines[0]!.fields).toMatchObject({ limit: "per_source", remote: attackerAddress })
  })

  it("on a dual-stack listener an IPv4 peer is its mapped address (::ffff:127.0.0.2) on every connection: one source, its IPv4 address, held to its share", async () => {
    const { running } = await startHeldIssuer({ host: "::", maxConnectionsPerSource: 2 })
    const held = Array.from({ length: 2 }, () => attackerTcp(running.issuer.port))
    await Promise.all(held.map((attacker) => attacker.connected))
    const late = attackerTcp(running.issuer.port)
    await until(() => late.state.closed)
    expect(held.every((attacker) => !attacker.state.closed)).toBe(true)
    expect(running.events.find((e) => e.event === "identity-connection-refused")!.fields).toMatchObject({ limit: "per_source", remote: `::ffff:${attackerAddress}`, source: attackerAddress })
  })

  it("past maxConnections in all a new connection is dropped by node, counted and logged as the total's", async () => {
    const { running } = await startHeldIssuer({ maxConnections: 4 })
    const held = Array.from({ length: 4 }, () => attackerTcp(running.issuer.port))
    await Promise.all(held.map((attacker) => attacker.connected))
    const late = attackerTcp(running.issuer.port)
    await until(() => late.state.closed)
    expect(held.every((attacker) => !attacker.state.closed)).toBe(true)
    expect(await honestSign(running).then(() => "signed", () => "refused")).toBe("refused")
    expect(running.events.filter((e) => e.event === "identity-connection-refused").map((e) => e.fields.limit)).toStrictEqual(["total", "total"])
    for (const attacker of held) attacker.socket.destroy()
    // Scrapes made before node has seen those closes are dropped too: each drop counted, and logged (under the throttle's 20).
    const text = await metricsMatching(running, /^iip_mesh_issuer_connections 1$/m)
    const drops = Number(text.match(/^iip_mesh_issuer_connections_refused_total\{limit="total"\} (\d+)$/m)?.[1])
    expect(drops).toBeGreaterThanOrEqual(2)
    expect(running.events.filter((e) => e.event === "identity-connection-refused" && e.fields.limit === "total")).toHaveLength(drops)
  })

  it("a connection holds its place no longer than the request timeout: silent before or after its handshake, or sending its head or body a byte at a time", async () => {
    // Node's own timers (handshakeTimeout, headersTimeout, requestTimeout, checked every second), not Effect's clock.
    const { running } = await startHeldIssuer({ requestTimeoutMs: 300 })
    const raw = attackerTcp(running.issuer.port)
    const idle = attackerTls(running.issuer.port)
    const head = attackerTls(running.issuer.port)
    const body = attackerTls(running.issuer.port)
    await Promise.all([raw.connected, idle.secure, head.secure, body.secure])
    head.socket.write("POST /v1/sign HTTP/1.1\r\nhost: issuer\r\n")
    body.socket.write("POST /v1/sign HTTP/1.1\r\nhost: issuer\r\ntransfer-encoding: chunked\r\n\r\n")
    const trickle = setInterval(() => {
      if (!head.state.closed) head.socket.write("x-pad: 1\r\n")
      if (!body.state.closed) body.socket.write("1\r\n \r\n")
    }, 20)
    try {
      await until(() => [raw, idle, head, body].every((attacker) => attacker.state.closed), 10_000)
    } finally {
      clearInterval(trickle)
    }
    expect(head.statuses()).toStrictEqual([408])
    expect(body.statuses()).toStrictEqual([408])
    // Only the scrape's own connection is left.
    await metricsMatching(running, /^iip_mesh_issuer_connections 1$/m)
  })
})

describe("issuer: its log under a flood", () => {
  it("a peer's 200 bad requests write 20 refusal lines, not 200; a sidecar's refused join token is still logged, and every refusal counted", async () => {
    const { running } = await startHeldIssuer()
    const attacker = attackerTls(running.issuer.port)
    await attacker.secure
    attacker.socket.write(signRequest("not json").repeat(200))
    await until(() => attacker.statuses().length === 200)
    expect(refused(running, "bad-request")).toBe(200)
    const lines = running.events.filter((e) => e.event === "identity-refused")
    expect(lines).toHaveLength(20)
    expect(lines[0]!.fields).toMatchObject({ reason: "bad-request", remote: attackerAddress })
    await expect(honestSign(running, { kind: "join", token: "x".repeat(40) })).rejects.toMatchObject({ status: 401, reason: "bad-join-token" })
    expect(running.events.filter((e) => e.event === "identity-refused").at(-1)!.fields).toMatchObject({ reason: "bad-join-token", remote: "127.0.0.1" })
  })
})

describe("issuer: every share taken is given back once", () => {
  /** An API server that holds TokenReviews of the token "held" (until their caller leaves) and drops the connection of "fail". */
  const abortingApiServer = async () => {
    const state = { reviews: 0, open: new Set<http.ServerResponse>() }
    const server = http.createServer((request, response) => {
      let text = ""
      request.on("data", (chunk: Buffer) => (text += chunk.toString()))
      request.on("end", () => {
        state.reviews++
        if (text.includes(`"token":"fail"`)) return void request.socket.destroy()
        state.open.add(response)
        response.on("close", () => state.open.delete(response))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanups.push(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
    return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, state }
  }

  it("signings whose TokenReview times out give their slots back: the address's full share is taken again at once", async () => {
    // The API server holds every review; each times out after 300 ms.
    const { running } = await startHeldIssuer({}, 300)
    const attackers = Array.from({ length: 4 }, () => attackerTls(running.issuer.port))
    await Promise.all(attackers.map((attacker) => attacker.secure))
    for (const attacker of attackers) attacker.socket.write(signRequest(attackBody).repeat(4))
    await until(() => attackers.flatMap((attacker) => attacker.statuses()).length === 16, 10_000, () => running.issuer.refused())
    expect(attackers.flatMap((attacker) => attacker.statuses())).toStrictEqual(Array(16).fill(503))
    expect(await metricsOf(running)).toMatch(/^iip_mesh_issuer_signings_in_flight 0$/m)
    for (const attacker of attackers) attacker.socket.write(signRequest(attackBody).repeat(4))
    await until(() => refused(running, "token-review-unavailable") === 32, 10_000, () => running.issuer.refused())
    expect(refused(running, "too-many-requests")).toBe(0)
  })

  it("an issuer stopping with signings at the TokenReview aborts those reviews: no request to the API server outlives it", async () => {
    const { api, running } = await startHeldIssuer()
    const attacker = attackerTls(running.issuer.port)
    await attacker.secure
    attacker.socket.write(signRequest(attackBody).repeat(4))
    await until(() => api.held.length === 4)
    let reviewsClosed = 0
    for (const response of api.held) response.once("close", () => reviewsClosed++)
    await running.stop()
    // Bounded well below the review's own 60 s timeout.
    await until(() => reviewsClosed === 4, 5_000, () => reviewsClosed)
  })

  it("after 1,000 requests from one address that left mid-signing, failed at the TokenReview, were refused after taking a slot or past the connection's share, or broke off their body, the gauges are back to 0 and the address has its full share", async () => {
    const api = await abortingApiServer()
    const running = await startIssuer(ca, {
      joinTokens: joinTokensNow(`${joinToken} catalog\n`),
      // The held TokenReviews end only when their caller leaves: the timeout is not what frees them.
      tokenReview: { apiUrl: api.url, ca: undefined, bearerToken: () => "issuer-own-token", audience, timeoutMs: 60_000 },
      maxConnectionsPerSource: 64,
      ...unlimitedHandshakes
    })
    cleanups.push(() => running.stop())
    const pair = await generateKeyPair()
    const csr = await createCertificateRequest(pair.keys, undefined)
    const body = (kind: "kubernetes" | "join", token: string) => JSON.stringify({ csr, proof: { kind, token } })
    const held = signRequest(body("kubernetes", "held"))
    const rounds = 59
    let requests = 0
    for (let round = 0; round < rounds; round++) {
      const reviewsBefore = api.state.reviews
      // Pipelined 8: 4 take the connection's share, 4 are refused 429; then it leaves.
      const pipelined = attackerTls(running.issuer.port)
      // Each sends one to be held at the API server, then leaves: two with a FIN, two with a reset.
      const leaving = Array.from({ length: 4 }, () => attackerTls(running.issuer.port))
      // TokenReview fails (503 token-review-unavailable); a bad join token (401) is refused after its slot was taken.
      const failing = Array.from({ length: 2 }, () => attackerTls(running.issuer.port))
      const badToken = Array.from({ length: 2 }, () => attackerTls(running.issuer.port))
      // Sends its head and part of its body, then leaves: never takes a slot.
      const broken = attackerTls(running.issuer.port)
      const all = [pipelined, ...leaving, ...failing, ...badToken, broken]
      await Promise.all(all.map((attacker) => attacker.secure))
      pipelined.socket.write(held.repeat(8))
      for (const attacker of leaving) attacker.socket.write(held)
      for (const attacker of failing) attacker.socket.write(signRequest(body("kubernetes", "fail")))
      for (const attacker of badToken) attacker.socket.write(signRequest(body("join", "x".repeat(40))))
      broken.socket.write(held.slice(0, held.length - 10))
      const answered = [...failing, ...badToken]
      await until(() => api.state.reviews - reviewsBefore === 10 && answered.every((attacker) => attacker.statuses().length === 1), 10_000, () => [round, api.state.reviews - reviewsBefore, running.issuer.refused()])
      for (const attacker of leaving.slice(2)) attacker.tcp.resetAndDestroy()
      for (const attacker of all) attacker.socket.destroy()
      requests += 8 + 4 + 2 + 2 + 1
    }
    expect(requests).toBeGreaterThanOrEqual(1_000)
    await until(() => api.state.open.size === 0, 10_000, () => api.state.open.size)
    const text = await metricsMatching(running, /^iip_mesh_issuer_signings_in_flight 0$/m)
    // Only the scrape's own connection is left.
    expect(await metricsMatching(running, /^iip_mesh_issuer_connections 1$/m)).toMatch(/^iip_mesh_issuer_connections 1$/m)
    expect(text).toMatch(new RegExp(`^iip_mesh_issuer_refused_total\\{reason="too-many-requests"\\} ${rounds * 4}$`, "m"))
    expect(text).toMatch(new RegExp(`^iip_mesh_issuer_refused_total\\{reason="bad-request"\\} ${rounds}$`, "m"))
    expect(text).toMatch(new RegExp(`^iip_mesh_issuer_refused_total\\{reason="token-review-unavailable"\\} ${rounds * 2}$`, "m"))
    expect(text).toMatch(new RegExp(`^iip_mesh_issuer_refused_total\\{reason="bad-join-token"\\} ${rounds * 2}$`, "m"))
    expect(text).toMatch(new RegExp(`^iip_mesh_issuer_abandoned_total ${rounds * 8}$`, "m"))
    // The address's full share: 16 held at once, on 4 connections, none refused.
    const refusedBefore = refused(running, "too-many-requests")
    const reviewsBefore = api.state.reviews
    const again = Array.from({ length: 4 }, () => attackerTls(running.issuer.port))
    await Promise.all(again.map((attacker) => attacker.secure))
    for (const attacker of again) attacker.socket.write(held.repeat(4))
    await until(() => api.state.reviews - reviewsBefore === 16, 10_000, () => [api.state.reviews - reviewsBefore, running.issuer.refused()])
    expect(refused(running, "too-many-requests")).toBe(refusedBefore)
    for (const attacker of again) attacker.socket.destroy()
    await metricsMatching(running, /^iip_mesh_issuer_signings_in_flight 0$/m)
    // And is signed.
    const honest = attackerTls(running.issuer.port)
    await honest.secure
    honest.socket.write(signRequest(body("join", joinToken)))
    await until(() => honest.statuses().length === 1, 10_000, () => honest.state.text)
    expect(honest.statuses()).toStrictEqual([200])
    // 59 rounds of 9 TLS connections (and 16 more): 2.7-5.9 s in CI, over vitest's default 30 s beside
    // two busy loops at load 15; each step keeps its own bound.
  }, 120_000)
})
