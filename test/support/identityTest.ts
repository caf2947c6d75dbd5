// Shared set-up of the identity tests: a mesh CA in memory, an issuer (src/identity/issuer.ts) on
// 127.0.0.1:0 with its scope, and a fake Kubernetes API server answering TokenReviews the way the
// real one does (a token is valid only for the audiences it was minted for; a deleted account's
// token is not authenticated).
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import type { IssuingCa } from "../../src/identity/caDirectory.ts"
import { createIntermediateCa, createRootCa, generateKeyPair } from "../../src/identity/certificates.ts"
import * as Issuer from "../../src/identity/issuer.ts"
import { defaultJoinTokenTtlMs, type JoinToken, parseJoinTokens } from "../../src/identity/proofs.ts"
import { collectLog } from "./meshTest.ts"

const day = 86_400_000
/** Resolves when `check` holds, polled on real time; rejects after `ms` so a missing event fails the test. */
export const eventually = (check: () => boolean, ms = 5_000) =>
  Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      const started = Date.now()
      const poll = () => (check() ? resolve() : Date.now() - started > ms ? reject(new Error("timed out waiting")) : setTimeout(poll, 5))
      poll()
    })
  )

export const trustDomain = "test.mesh"

/** Join tokens as a file written now would give them (ending the default 24 h from now, unless a line says expires=). */
export const joinTokensNow = (text: string): Array<JoinToken> => parseJoinTokens(text, { writtenAt: Date.now(), defaultTtlMs: defaultJoinTokenTtlMs })
export const audience = "iip-mesh-identity"

export const makeIssuingCa = async (name = "test"): Promise<IssuingCa & { rootPem: string }> => {
  const root = await createRootCa({ commonName: `${name} root`, trustDomain, lifetimeMs: 10 * day })
  const intermediate = await createIntermediateCa(root, { commonName: `${name} intermediate`, trustDomain, lifetimeMs: 5 * day })
  return { intermediate, trustBundlePem: root.certificatePem, trustDomain, rootPem: root.certificatePem }
}

/** A token the fake API server knows: who it belongs to, the audiences it was minted for, whether the account still exists. */
export interface FakeToken {
  readonly username: string
  readonly audiences: ReadonlyArray<string>
  readonly exists?: boolean
  /** Answer as an API server that ignores spec.audiences would (authenticated, no audiences). */
  readonly ignoreAudiences?: boolean
}

export interface FakeApiServer {
  readonly url: string
  /** Every TokenReview body received, with its Authorization header. */
  readonly reviews: Array<{ readonly body: { spec: { token: string; audiences?: Array<string> } }; readonly authorization: string | undefined }>
  readonly close: () => Promise<void>
}

/** A self-signed certificate for 127.0.0.1 (an IP SAN, as node:tls checks a host that is an address): the fake API server's. */
const apiServerCertificate = async (): Promise<{ key: string; cert: string }> => {
  const pair = await generateKeyPair()
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=fake-kube-apiserver",
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys: pair.keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "ip", value: "127.0.0.1" }])]
  })
  return { key: pair.privateKeyPem, cert: certificate.toString("pem") }
}

/** Starts the fake API server, over HTTPS with its own certificate (`ca`) when `tls` is set. */
export const startFakeApiServer = async (tokens: Readonly<Record<string, FakeToken>>, options: { readonly tls?: boolean } = {}): Promise<FakeApiServer & { readonly ca?: string }> => {
  const reviews: FakeApiServer["reviews"] = []
  const credentials = options.tls === true ? await apiServerCertificate() : undefined
  const handler = (request: http.IncomingMessage, response: http.ServerResponse) => {
    let text = ""
    request.on("data", (chunk: Buffer) => (text += chunk.toString()))
    request.on("end", () => {
      if (request.method !== "POST" || request.url !== "/apis/authentication.k8s.io/v1/tokenreviews") {
        response.writeHead(404).end("{}")
        return
      }
      const body = JSON.parse(text) as FakeApiServer["reviews"][number]["body"]
      reviews.push({ body, authorization: request.headers.authorization })
      const token = tokens[body.spec.token]
      const wanted = body.spec.audiences ?? []
      const status = token === undefined || token.exists === false
        ? { authenticated: false, error: "[invalid bearer token, service account token has been invalidated]" }
        : token.ignoreAudiences === true
        ? { authenticated: true, user: { username: token.username } }
        : !wanted.some((a) => token.audiences.includes(a))
        ? { authenticated: false, error: `[invalid bearer token, token audiences ${JSON.stringify(token.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]` }
        : { authenticated: true, audiences: wanted.filter((a) => token.audiences.includes(a)), user: { username: token.username } }
      response.writeHead(201, { "content-type": "application/json" })
      response.end(JSON.stringify({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: body.spec, status }))
    })
  }
  const server = credentials === undefined ? http.createServer(handler) : https.createServer(credentials, handler)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `${credentials === undefined ? "http" : "https"}://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    reviews,
    ...(credentials === undefined ? {} : { ca: credentials.cert }),
    close: () => new Promise((resolve) => server.close(() => resolve()))
  }
}

export interface RunningIssuer {
  readonly issuer: Issuer.Issuer
  readonly url: string
  readonly events: ReturnType<typeof collectLog>["events"]
  readonly stop: () => Promise<void>
}

export const startIssuer = async (
  ca: IssuingCa,
  options: { readonly apiUrl?: string; readonly apiCa?: string | undefined; readonly joinTokens?: ReadonlyArray<JoinToken> } & Partial<Omit<Issuer.IssuerOptions, "joinTokens">> = {}
): Promise<RunningIssuer> => {
  const { events, log } = collectLog()
  const joinTokens = options.joinTokens ?? []
  const scope = await Effect.runPromise(Scope.make())
  const issuer = await Effect.runPromise(
    Issuer.make({
      ca,
      trustDomain,
      host: "127.0.0.1",
      port: 0,
      ...Issuer.issuerDefaults,
      tokenReview: options.apiUrl === undefined ? undefined : { apiUrl: options.apiUrl, ca: options.apiCa, bearerToken: () => "issuer-own-token", audience, timeoutMs: 2_000 },
      log,
      ...options,
      joinTokens: () => joinTokens
    }).pipe(Scope.provide(scope))
  )
  return { issuer, url: `https://127.0.0.1:${issuer.port}`, events, stop: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

/**
 * A TCP server on 127.0.0.1:0 that takes connections, reads what comes (so it sees a client close)
 * and never answers (a TLS handshake never completes): an issuer that has gone silent. Closed,
 * its connections destroyed, with the scope.
 */
export const silentServer = Effect.gen(function*() {
  const held = new Set<net.Socket>()
  const state = { held, closed: 0 }
  const server = net.createServer((socket) => {
    held.add(socket)
    socket.resume()
    socket.on("close", () => state.closed++)
  })
  const port = yield* Effect.acquireRelease(
    Effect.promise(() => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)))),
    () =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          for (const socket of held) socket.destroy()
          server.close(() => resolve())
        })
      )
  )
  return { port, state }
})
