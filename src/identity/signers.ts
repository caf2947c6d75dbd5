// The two ways a sidecar's CSR gets signed (identityClient.ts's Signer), and its trust bundle
// fetched between renewals (its BundleFetcher):
// - issuerSigner: POST /v1/sign to `iip-mesh identity` over HTTPS, the issuer verified against the
//   trust bundle and by its SPIFFE ID (spiffe://<td>/issuer), the proof read fresh on every call
//   (kubelet rotates projected tokens; a join-token file may be replaced), the credentials held
//   presented as the TLS client certificate (a renewal past its join token's end rests on them);
//   issuerTrustBundle: GET /v1/bundle, verified the same way.
// - developmentSigner: the sidecar holds the issuer's CA directory and signs its own leaf. For a
//   laptop only: anyone who can read that directory can be anyone in the mesh, and the log says so;
//   developmentTrustBundle reads that directory's bundle.pem again.
import * as Data from "effect/Data"
import { X509Certificate } from "node:crypto"
import * as https from "node:https"
import { join } from "node:path"
import { type Log } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import { MAX_SECRET_FILE_BYTES, readSmallText, readSmallTextAsync } from "../iip/smallFile.ts"
import { caFiles, loadIssuingCa } from "./caDirectory.ts"
import { issueLeaf, validFromNow } from "./certificates.ts"
import { readCertificateRequest } from "./certificateRequest.ts"
import type { WorkloadCredentials } from "./credentials.ts"
import type { BundleFetcher, Signer } from "./identityClient.ts"
import type { ProofKind, SignResponse } from "./issuer.ts"
import { issuerSpiffeId } from "./spiffe.ts"
import { maxPemChars } from "./trustBundle.ts"

export interface IssuerOptions {
  /** https://HOST:PORT of the issuer. */
  readonly issuerUrl: string
  readonly trustDomain: string
  /** The roots the issuer's certificate is verified against, read on every call (they change with a rotation); a promise when read from a file. */
  readonly trustBundle: () => string | Promise<string>
  /** One call's bound (default 10 s). */
  readonly timeoutMs?: number
  /** Largest answer read (default 64 KiB). */
  readonly maxResponseBytes?: number
}

export interface IssuerSignerOptions extends IssuerOptions {
  /** The proof, read on every call. */
  readonly proof: () => { readonly kind: ProofKind; readonly token: string }
  /** The credentials held, presented on every call once there are some (a renewal); undefined when joining. */
  readonly credentials?: () => Pick<WorkloadCredentials, "privateKeyPem" | "certificateChainPem"> | undefined
}

/**
 * The issuer answered, refusing: its status and its reason (issuer.ts answers a reason of
 * proofs.ts's refusalReasons; 429 `too-many-requests` and 503 `overloaded` pass with time), both
 * shortened and escaped for a log line, as a foreign server may say anything; and its
 * `retry-after` in ms when it gave one in seconds (the identity client bounds it).
 */
export class IssuerRefused extends Data.TaggedError("IssuerRefused")<{ readonly status: number; readonly reason: string; readonly detail: string; readonly retryAfterMs: number | undefined }> {
  override get message(): string {
    return `the issuer refused (${this.status} ${this.reason}): ${this.detail}`
  }
}

/**
 * A file's content without its trailing newline; a token file is re-read on every call. A FIFO,
 * a device or a file over MAX_SECRET_FILE_BYTES throws, naming the path, never what it holds.
 */
export const readSecretFile = (path: string): string => readSmallText(path, MAX_SECRET_FILE_BYTES).trim()

/**
 * One call to the issuer: its JSON answer when it says 200; rejects otherwise, within the time and
 * size bounds, or at once when `signal` aborts (its caller has gone: the connection and the timer go too).
 */
const callIssuer = async (options: IssuerOptions, path: string, body: string | undefined, signal?: AbortSignal, held?: Pick<WorkloadCredentials, "privateKeyPem" | "certificateChainPem">) => {
  const ca = await options.trustBundle()
  // Gone while the bundle was read (the sidecar stopping): a request made now dials the issuer
  // once more before its aborted signal destroys it.
  signal?.throwIfAborted()
  return new Promise<unknown>((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 10_000
    const maxBytes = options.maxResponseBytes ?? 64 * 1024
    const expected = issuerSpiffeId(options.trustDomain)
    const request = https.request(new URL(path, options.issuerUrl), {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) },
      ca,
      minVersion: "TLSv1.3",
      // The issuer is known by its SPIFFE ID, not by a host name (it may be reached by a Service
      // name, an address or a port-forward): the chain is checked by node:tls, the name here.
      checkServerIdentity: (_host, certificate) => {
        const uris = (certificate.subjectaltname ?? "").split(", ").filter((name) => name.startsWith("URI:"))
        return uris.length === 1 && uris[0] === `URI:${expected}` ? undefined : new Error(`the issuer's certificate does not name ${expected}`)
      },
      ...(held === undefined ? {} : { key: held.privateKeyPem, cert: held.certificateChainPem }),
      agent: false,
      signal
    })
    const timer = setTimeout(() => request.destroy(new Error(`the issuer did not answer within ${timeoutMs} ms`)), timeoutMs)
    const failed = (error: Error) => {
      clearTimeout(timer)
      reject(error)
    }
    request.on("error", failed)
    request.on("response", (response) => {
      const chunks: Array<Buffer> = []
      let size = 0
      response.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > maxBytes) request.destroy(new Error(`the issuer's answer is larger than ${maxBytes} bytes`))
        else chunks.push(chunk)
      })
      response.on("error", failed)
      response.on("end", () => {
        clearTimeout(timer)
        let json: unknown
        try {
          json = JSON.parse(Buffer.concat(chunks).toString("utf8"))
        } catch {
          return reject(new Error(`the issuer answered ${response.statusCode} without JSON`))
        }
        if (response.statusCode !== 200) {
          // Any JSON at all (null included): what is not an object names no reason.
          const { error, message } = (typeof json === "object" && json !== null ? json : {}) as { error?: unknown; message?: unknown }
          const retryAfter = response.headers["retry-after"]
          const retryAfterMs = retryAfter !== undefined && /^\d{1,9}$/.test(retryAfter) ? Number(retryAfter) * 1_000 : undefined
          return reject(new IssuerRefused({ status: response.statusCode ?? 0, reason: loggable(String(error), 64), detail: loggable(String(message)), retryAfterMs }))
        }
        resolve(json)
      })
    })
    request.end(body)
  })
}

export const issuerSigner = (options: IssuerSignerOptions): Signer => (csrPem, signal) =>
  callIssuer(options, "/v1/sign", JSON.stringify({ csr: csrPem, proof: options.proof() }), signal, options.credentials?.()) as Promise<SignResponse>

/** GET /v1/bundle: the bundle as the issuer holds it now, whatever it is (the identity client checks and bounds it). */
export const issuerTrustBundle = (options: IssuerOptions): BundleFetcher => async (signal) => {
  const answer = await callIssuer(options, "/v1/bundle", undefined, signal)
  return typeof answer === "object" && answer !== null ? (answer as { readonly trustBundlePem?: unknown }).trustBundlePem : undefined
}

export interface DevelopmentSignerOptions {
  /** A CA directory (`iip-mesh ca init`) with intermediate.pem, intermediate.key.pem, bundle.pem. */
  readonly caDir: string
  readonly leafLifetimeMs: number
  readonly log: Log
}

/**
 * A trust bundle file as it is now, read off the event loop: a FIFO, a device or a file over
 * maxPemChars bytes is refused unread, the error naming the path (the caller keeps what it holds).
 */
export const readTrustBundleFile = (path: string): Promise<string> => readSmallTextAsync(path, maxPemChars)

/** The bundle.pem of `caDir` as it is now: a rotation there reaches the development sidecar between renewals. */
export const developmentTrustBundle = (caDir: string): BundleFetcher => () => readTrustBundleFile(join(caDir, caFiles.bundle))

/** Signs this sidecar's own CSRs with the issuer's key from `caDir`, loudly. */
export const developmentSigner = (options: DevelopmentSignerOptions): Signer => {
  const ca = loadIssuingCa(options.caDir)
  const warning = `DEVELOPMENT ONLY: this sidecar signs its own certificate with the issuer key in ${options.caDir}; whoever can read that directory can claim any identity in the mesh`
  options.log("identity-development-signing", { warning })
  return async (csrPem) => {
    const request = await readCertificateRequest(csrPem)
    if (request.requestedId === undefined) throw new Error("a development signer needs the request to name its identity")
    const leaf = await issueLeaf(ca.intermediate, { spiffeId: request.requestedId, publicKey: request.publicKey, ...validFromNow(options.leafLifetimeMs) })
    options.log("identity-development-signed", { spiffeId: request.requestedId, warning })
    return {
      spiffeId: request.requestedId,
      certificateChainPem: leaf + ca.intermediate.certificatePem,
      trustBundlePem: ca.trustBundlePem,
      notAfter: new Date(new X509Certificate(leaf).validTo).toISOString()
    }
  }
}
