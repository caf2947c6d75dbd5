// The issuer against hostile peers (wave 2: no input may crash, desync or exhaust the issuer): a
// Kubernetes API server whose answer never ends is bounded by the review's timeout, one answering
// the wrong JSON types is refused as its fault, never blamed on the sidecar; clients that stall
// after the handshake are closed at the request timeout and hold no signing slot; one presenting
// its certificate that leaves once its request is sent is answered for what it sent; JSON bombs
// are refused as bad requests; and the leaves it signs never outlive its intermediate.
import { X509Certificate } from "node:crypto"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import type { AddressInfo } from "node:net"
import * as tls from "node:tls"
import { beforeAll, describe, expect, it, vi } from "vitest"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf, validFromNow } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import { issuerSigner, issuerTrustBundle } from "../../src/identity/signers.ts"
import { issuerSpiffeId } from "../../src/identity/spiffe.ts"
import { audience, joinTokensNow, makeIssuingCa, type RunningIssuer, startIssuer, trustDomain } from "../support/identityTest.ts"

let ca: Awaited<ReturnType<typeof makeIssuingCa>>
beforeAll(async () => {
  ca = await makeIssuingCa()
})

/** Writes `total` bytes of spaces as fast as `response` takes them, telling `wrote` each chunk, until it is destroyed. */
const writeSpaces = (response: http.ServerResponse, total: number, wrote: (bytes: number) => void) => {
  const chunk = Buffer.alloc(64 * 1024, 0x20)
  let left = total
  const more = () => {
    while (left > 0 && !response.destroyed) {
      left -= chunk.length
      wrote(chunk.length)
      if (!response.write(chunk)) return void response.once("drain", more)
    }
    response.end()
  }
  more()
}

/** An issuer whose TokenReviews go to an API server answering with `handler`; `run` asks it to sign with a Kubernetes token. */
const withApiServer = async (handler: http.RequestListener, run: (sign: () => Promise<unknown>) => Promise<void>) => {
  const api = http.createServer(handler)
  await new Promise<void>((resolve) => api.listen(0, "127.0.0.1", resolve))
  const running = await startIssuer(ca, { apiUrl: `http://127.0.0.1:${(api.address() as AddressInfo).port}` })
  try {
    const pair = await generateKeyPair()
    const csr = await createCertificateRequest(pair.keys, undefined)
    const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "kubernetes", token: "x" }), timeoutMs: 8_000 })
    await run(() => signer(csr))
  } finally {
    await running.stop()
    api.closeAllConnections()
    api.close()
  }
}

describe("issuer: a hostile Kubernetes API server", () => {
  it("a TokenReview answer that trickles and never ends is token-review-unavailable at the review timeout (2 s here)", async () => {
    await withApiServer((_request, response) => {
      response.writeHead(201, { "content-type": "application/json" })
      response.write("{")
      const trickle = setInterval(() => response.write(" "), 100)
      response.on("close", () => clearInterval(trickle))
    }, async (sign) => {
      const started = Date.now()
      await expect(sign()).rejects.toThrow(/503 token-review-unavailable/)
      expect(Date.now() - started).toBeLessThan(4_000)
    })
  })

  it("a TokenReview answer of 8 MiB is token-review-unavailable once past 64 KiB", async () => {
    await withApiServer((_request, response) => {
      response.writeHead(201, { "content-type": "application/json" })
      writeSpaces(response, 8 * 1024 * 1024, () => {})
    }, async (sign) => {
      await expect(sign()).rejects.toThrow(/503 token-review-unavailable\): TokenReview failed: answer larger than 65536 bytes/)
    })
  })

  it.each([
    ["a number", 7],
    ["an array", ["system:serviceaccount:shop:catalog"]],
    ["an object", { toString: "system:serviceaccount:shop:catalog" }]
  ])("a TokenReview answer whose username is %s is not-a-service-account (403), not the sidecar's bad request", async (_what, username) => {
    await withApiServer((_request, response) => {
      response.writeHead(201, { "content-type": "application/json" })
      response.end(JSON.stringify({ status: { authenticated: true, audiences: [audience], user: { username } } }))
    }, async (sign) => {
      await expect(sign()).rejects.toThrow(/403 not-a-service-account/)
    })
  })
})

/** A TLS client of the issuer that sends `text` and then nothing; resolves with how long the issuer kept the connection. */
const stallAfter = (url: string, text: string) =>
  new Promise<number>((resolve) => {
    const started = performance.now()
    const socket = tls.connect({ host: "127.0.0.1", port: Number(new URL(url).port), rejectUnauthorized: false }, () => socket.write(text))
    socket.on("error", () => {})
    socket.on("close", () => resolve(performance.now() - started))
    socket.resume()
  })

describe("issuer: clients that stall after the handshake", () => {
  it("a connection that sends nothing, half a head or half a body is closed within the request timeout (1 s here) and a second, not node's 30 s check", async () => {
    const running = await startIssuer(ca, { requestTimeoutMs: 1_000 })
    try {
      const kept = await Promise.all(["", "POST /v1/sign HTTP/1.1\r\nhost: x\r\n", "POST /v1/sign HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"].map((text) => stallAfter(running.url, text)))
      for (const ms of kept) expect(ms).toBeLessThan(5_000)
    } finally {
      await running.stop()
    }
  }, 40_000)

  it("a client stalled mid-body holds no signing slot: with maxInFlight 1 a sidecar is still signed meanwhile", async () => {
    const joinToken = "j".repeat(40)
    const running = await startIssuer(ca, { joinTokens: joinTokensNow(`${joinToken} catalog\n`), maxInFlight: 1 })
    try {
      // node answers 100 Continue right before it hands the request to the issuer's handler: once
      // it arrives, the stalled request is in the handler, reading its body.
      const socket = tls.connect({ host: "127.0.0.1", port: Number(new URL(running.url).port), rejectUnauthorized: false }, () =>
        socket.write("POST /v1/sign HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 100\r\n\r\n"))
      socket.on("error", () => {})
      await new Promise<void>((resolve) => socket.on("data", (chunk: Buffer) => chunk.toString().startsWith("HTTP/1.1 100") && resolve()))
      socket.write("{")
      const pair = await generateKeyPair()
      const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token: joinToken }) })
      const answer = await signer(await createCertificateRequest(pair.keys, undefined))
      expect(answer.spiffeId).toBe(`spiffe://${trustDomain}/svc/catalog`)
      socket.destroy()
    } finally {
      await running.stop()
    }
  })
})

describe("issuer: a client presenting its certificate that leaves", () => {
  it("once its whole request is in, it is signed as if it had stayed (its connection gone before the proof is checked), never refused for an error reading the closed connection", async () => {
    const joinToken = "j".repeat(40)
    const running = await startIssuer(ca, { joinTokens: joinTokensNow(`${joinToken} catalog\n`) })
    try {
      const pair = await generateKeyPair()
      const catalog = `spiffe://${trustDomain}/svc/catalog`
      const chain = (await issueLeaf(ca.intermediate, { spiffeId: catalog, publicKey: pair.keys.publicKey, ...validFromNow(3_600_000) })) + ca.intermediate.certificatePem
      const body = JSON.stringify({ csr: await createCertificateRequest(pair.keys, catalog), proof: { kind: "join", token: joinToken } })
      const attempts = 5
      for (let i = 0; i < attempts; i++) {
        // A reset as soon as the request is written: the issuer is still checking the CSR (async) when the connection closes.
        const raw = net.connect(Number(new URL(running.url).port), "127.0.0.1")
        const socket = tls.connect({ socket: raw, rejectUnauthorized: false, key: pair.privateKeyPem, cert: chain }, () =>
          socket.write(`POST /v1/sign HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, () => raw.resetAndDestroy()))
        socket.on("error", () => {})
        raw.on("error", () => {})
        await new Promise((resolve) => raw.on("close", resolve))
      }
      const outcomes = () => running.events.filter((e) => e.event === "identity-issued" || e.event === "identity-refused")
      await vi.waitFor(() => expect(outcomes()).toHaveLength(attempts), { timeout: 5_000 })
      expect(outcomes().map((e) => [e.event, e.fields.detail])).toStrictEqual(Array.from({ length: attempts }, () => ["identity-issued", undefined]))
    } finally {
      await running.stop()
    }
  })
})

/** A raw TLS client POSTing `body` to /v1/sign (connection: close); resolves with the status line's code and the body's JSON `error`. */
const rawSign = (url: string, body: string) =>
  new Promise<{ status: number; error: unknown }>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    const socket = tls.connect({ host: "127.0.0.1", port: Number(new URL(url).port), rejectUnauthorized: false }, () =>
      socket.end(`POST /v1/sign HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`))
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", reject)
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString()
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
      resolve({ status, error: status === 0 ? undefined : (JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4)) as { error: unknown }).error })
    })
  })

describe("issuer: JSON bombs", () => {
  // Guards (wave 2 probe: these held, no test had them; a body over the bound is issuer.test.ts's).
  it("a body nested 8,000 deep in 16 KiB, or 500,000 deep in 1 MiB, and a 1 MB token inside the bound are each 400 bad-request, saying which field", async () => {
    const small = await startIssuer(ca, { joinTokens: joinTokensNow(`${"j".repeat(40)} catalog\n`) })
    const large = await startIssuer(ca, { joinTokens: joinTokensNow(`${"j".repeat(40)} catalog\n`), maxRequestBytes: 1024 * 1024 })
    try {
      const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth)
      expect(await rawSign(small.url, nested(8_000))).toStrictEqual({ status: 400, error: "bad-request" })
      expect(await rawSign(large.url, nested(500_000))).toStrictEqual({ status: 400, error: "bad-request" })
      expect(await rawSign(large.url, JSON.stringify({ csr: "x", proof: { kind: "join", token: "j".repeat(1_000_000) } }))).toStrictEqual({ status: 400, error: "bad-request" })
      const details = (running: RunningIssuer) => running.events.filter((e) => e.event === "identity-refused").map((e) => e.fields.detail)
      expect(details(small)).toStrictEqual(["csr: expected a PEM string"])
      expect(details(large)).toStrictEqual(["csr: expected a PEM string", "proof.token: expected a string of 1..8192 characters"])
    } finally {
      await small.stop()
      await large.stop()
    }
  })
})

describe("issuer: an intermediate near its end", () => {
  it("signs leaves that end with the intermediate, not 24 h later", async () => {
    const root = await createRootCa({ commonName: "root", trustDomain, lifetimeMs: 10 * 86_400_000 })
    const intermediate = await createIntermediateCa(root, { commonName: "ending", trustDomain, lifetimeMs: 2 * 3_600_000 })
    const joinToken = "j".repeat(40)
    const running = await startIssuer({ intermediate, trustBundlePem: root.certificatePem, trustDomain }, { joinTokens: joinTokensNow(`${joinToken} catalog\n`) })
    try {
      const pair = await generateKeyPair()
      const signer = issuerSigner({ issuerUrl: running.url, trustDomain, trustBundle: () => root.certificatePem, proof: () => ({ kind: "join", token: joinToken }) })
      const answer = await signer(await createCertificateRequest(pair.keys, undefined))
      const leafEnd = new Date(new X509Certificate(answer.certificateChainPem).validTo).getTime()
      const intermediateEnd = new Date(new X509Certificate(intermediate.certificatePem).validTo).getTime()
      expect(leafEnd).toBeLessThanOrEqual(intermediateEnd)
      expect(new Date(answer.notAfter).getTime()).toBe(leafEnd)
    } finally {
      await running.stop()
    }
  })
})

/** An HTTPS server holding the issuer's name (spiffe://td/issuer under the test CA) answering with `handler`. */
const withHostileIssuer = async (handler: http.RequestListener, run: (url: string) => Promise<void>) => {
  const pair = await generateKeyPair()
  const leaf = await issueLeaf(ca.intermediate, { spiffeId: issuerSpiffeId(trustDomain), publicKey: pair.keys.publicKey, ...validFromNow(3_600_000) })
  const server = https.createServer({ key: pair.privateKeyPem, cert: leaf + ca.intermediate.certificatePem }, handler)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  try {
    await run(`https://127.0.0.1:${(server.address() as AddressInfo).port}`)
  } finally {
    server.closeAllConnections()
    server.close()
  }
}

/** As withHostileIssuer, every answer `status` with `body`. */
const withFakeIssuer = (status: number, body: string, run: (url: string) => Promise<void>) =>
  withHostileIssuer((_request, response) => {
    response.writeHead(status, { "content-type": "application/json" })
    response.end(body)
  }, run)

describe("issuer: what a sidecar takes from something answering as the issuer", () => {
  // Guards (wave 2 probe: these held, no test had them): a sign call ends within its bound whatever the issuer does.
  it("an issuer that never answers, or answers 200 and trickles for ever, fails the sign call at its timeout (1 s here); one answering 64 MiB fails past 64 KiB, read no further", async () => {
    const pair = await generateKeyPair()
    const csr = await createCertificateRequest(pair.keys, undefined)
    let written = 0
    const handlers: Record<string, http.RequestListener> = {
      never: (request) => void request.resume(),
      trickle: (request, response) => {
        request.resume()
        response.writeHead(200, { "content-type": "application/json" })
        const trickle = setInterval(() => response.write(" "), 100)
        response.on("close", () => clearInterval(trickle))
      },
      huge: (request, response) => {
        request.resume()
        response.writeHead(200, { "content-type": "application/json" })
        writeSpaces(response, 64 * 1024 * 1024, (bytes) => (written += bytes))
      }
    }
    const outcomes: Record<string, string> = {}
    for (const [name, handler] of Object.entries(handlers)) {
      await withHostileIssuer(handler, async (url) => {
        const sign = issuerSigner({ issuerUrl: url, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token: "j".repeat(40) }), timeoutMs: 1_000 })
        const started = performance.now()
        outcomes[name] = await sign(csr).then(() => "signed", (error: Error) => error.message)
        expect(performance.now() - started).toBeLessThan(3_000)
      })
    }
    expect(outcomes).toStrictEqual({
      never: "the issuer did not answer within 1000 ms",
      trickle: "the issuer did not answer within 1000 ms",
      huge: "the issuer's answer is larger than 65536 bytes"
    })
    // What the kernel's buffers took before the call went, not 64 MiB.
    expect(written).toBeLessThan(16 * 1024 * 1024)
  })

  it.each(["null", "7", "\"text\"", "[1]"])("a refusal whose JSON is %s rejects the call with the status (not an exception out of the response handler, leaving the call unsettled)", async (body) => {
    await withFakeIssuer(503, body, async (url) => {
      const options = { issuerUrl: url, trustDomain, trustBundle: () => ca.trustBundlePem, timeoutMs: 2_000 }
      const pair = await generateKeyPair()
      const sign = issuerSigner({ ...options, proof: () => ({ kind: "join", token: "j".repeat(40) }) })
      await expect(sign(await createCertificateRequest(pair.keys, undefined))).rejects.toThrow(/the issuer refused \(503 undefined\): undefined/)
      await expect(issuerTrustBundle(options)()).rejects.toThrow(/the issuer refused \(503 undefined\)/)
    })
  })
})
