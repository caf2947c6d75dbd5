// The GETs an informer (kubernetesWatch.ts) sends the Kubernetes API server: the request itself,
// with the kubeconfig's credentials (shared by the list and the watch), and the list, read here
// rather than by the generated API client because the client reads an answer whole, with no bound:
// an API server (or a proxy in the middle) that streams a list without end grew a sidecar past
// 1 GB in 16 s, and one item without metadata threw out of the informer (an unhandled rejection
// that left discovery stopped for good, never retried). Here a list is at most MaxListBytes,
// whole within ListTimeoutMs, and its items are kept only when they are objects with metadata;
// anything else fails the list with a tagged error, and the informer is restarted after its backoff.
import type { KubeConfig, KubernetesListObject, KubernetesObject } from "@kubernetes/client-node"
import * as Data from "effect/Data"
import http from "node:http"
import https from "node:https"
import { parseJsonObject } from "../protocol/systemMessages.ts"

/** A list answer that was too large, too slow, not a list, or not 200 (`statusCode` set then, as the informer reads it). */
export class KubernetesListFailed extends Data.TaggedError("KubernetesListFailed")<{ readonly path: string; readonly message: string; readonly statusCode?: number }> {}

/**
 * The largest list answer read: etcd keeps objects under 1.5 MiB, and one Service's EndpointSlices
 * or one namespace's HTTPRoutes come nowhere near this; a larger answer is a broken or hostile server.
 */
export const MaxListBytes = 16 * 1024 * 1024

/** The time a whole list answer may take (a real API server answers such a list in well under a second). */
export const ListTimeoutMs = 30_000

/**
 * Sends GET `path` with `query` to the current cluster, with the kubeconfig's credentials, aborted by
 * `signal`. Undefined when `unwanted` says so once the credentials are ready (an exec or OIDC
 * authenticator may take a while); throws when they cannot be read or sent.
 */
export const sendGet = async (
  kubeConfig: KubeConfig,
  path: string,
  query: Record<string, unknown>,
  signal: AbortSignal,
  unwanted: () => boolean,
  onResponse: (response: http.IncomingMessage) => void
): Promise<http.ClientRequest | undefined> => {
  const cluster = kubeConfig.getCurrentCluster()
  if (cluster === null) throw new Error("No currently active cluster")
  const url = new URL(cluster.server + path)
  for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value))
  const options: https.RequestOptions = {}
  await kubeConfig.applyToHTTPSOptions(options)
  if (unwanted()) return undefined
  // The client's fetch strips leading and trailing whitespace from header values (a token file
  // ending in a newline works there); https.request would throw on it.
  const headers: Record<string, string | number | Array<string>> = {}
  for (const [name, value] of Object.entries(options.headers ?? {})) if (value !== undefined) headers[name] = typeof value === "string" ? value.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "") : value
  // The kubeconfig's agent is made once per cluster and user, with the CA and client certificate
  // read then, and an agent's options win over a request's: a CA file rotated in place (ca.crt in a
  // pod) or a renewed client certificate would never be read again. Without a proxy the request
  // gets an agent of its own (`false`), with what was read just now; through a proxy only the
  // kubeconfig's agent knows the way (it keeps the first CA and certificate).
  const agent = cluster.proxyUrl === undefined ? false : options.agent
  return (url.protocol === "https:" ? https : http).request(url, { ...options, agent, headers, method: "GET", signal }, onResponse)
}

/** A list read, and the bytes its answer took. */
export interface Listed<T extends KubernetesObject> {
  readonly list: KubernetesListObject<T>
  readonly bytes: number
}

/**
 * Lists `path` (with the label selector), bounded as the top of this file says; `stopped` (the
 * informer's stop) closes it wherever it is, so a list held open by the server does not outlive it.
 */
export const listKubernetes = <T extends KubernetesObject>(
  kubeConfig: KubeConfig,
  path: string,
  labelSelector: string | undefined,
  unwanted: () => boolean,
  stopped: AbortSignal
): Promise<Listed<T>> =>
  new Promise((resolve, reject) => {
    const controller = new AbortController()
    let settled = false
    const settle = (): void => {
      settled = true
      clearTimeout(timer)
      stopped.removeEventListener("abort", onStopped)
    }
    const fail = (message: string, statusCode?: number): void => {
      if (settled) return
      settle()
      controller.abort()
      reject(new KubernetesListFailed({ path, message, ...(statusCode === undefined ? {} : { statusCode }) }))
    }
    const onStopped = (): void => fail("kubernetes watch stopped")
    const timer = setTimeout(() => fail(`no whole list answer within ${ListTimeoutMs} ms`), ListTimeoutMs)
    timer.unref()
    if (stopped.aborted) return onStopped()
    stopped.addEventListener("abort", onStopped, { once: true })
    const onResponse = (response: http.IncomingMessage): void => {
      if (response.statusCode !== 200) {
        response.resume()
        return fail(`list answered ${response.statusCode}`, response.statusCode)
      }
      const declared = Number(response.headers["content-length"])
      if (declared > MaxListBytes) return fail(`a list answer of ${declared} bytes, over ${MaxListBytes}`)
      const chunks: Array<Buffer> = []
      let size = 0
      response.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > MaxListBytes) return fail(`a list answer longer than ${MaxListBytes} bytes`)
        if (!settled) chunks.push(chunk)
      })
      response.on("end", () => {
        if (settled) return
        const list = listOf<T>(Buffer.concat(chunks))
        if (list === undefined) return fail("a list answer that is not a list of objects")
        settle()
        resolve({ list, bytes: size })
      })
      response.on("error", (error) => fail(error.message))
      response.on("close", () => fail("the list answer ended early"))
    }
    sendGet(kubeConfig, path, labelSelector === undefined ? {} : { labelSelector }, controller.signal, unwanted, onResponse).then(
      (request) => {
        if (request === undefined) return fail("kubernetes watch stopped")
        request.on("error", (error) => fail(error.message))
        request.end()
      },
      (error: unknown) => fail(error instanceof Error ? error.message : String(error))
    )
  })

/** The list in `bytes`, its items that are objects with metadata kept (the informer indexes them by metadata); undefined when it is no list. */
const listOf = <T extends KubernetesObject>(bytes: Uint8Array): KubernetesListObject<T> | undefined => {
  const value = parseJsonObject(bytes)
  if (value === undefined) return undefined
  const { items, metadata } = value
  if (items !== undefined && items !== null && !Array.isArray(items)) return undefined
  const kept = (Array.isArray(items) ? items : []).filter((item: unknown): item is T => typeof item === "object" && item !== null && hasMetadata(item))
  const resourceVersion = typeof metadata === "object" && metadata !== null ? (metadata as { readonly resourceVersion?: unknown }).resourceVersion : undefined
  return { ...(value as unknown as KubernetesListObject<T>), items: kept, metadata: typeof resourceVersion === "string" ? { resourceVersion } : {} }
}

/** Metadata an informer can index: an object whose name and namespace, when present, are strings. */
export const hasMetadata = (object: object): boolean => {
  const metadata = (object as { readonly metadata?: unknown }).metadata
  if (typeof metadata !== "object" || metadata === null) return false
  const { name, namespace } = metadata as { readonly name?: unknown; readonly namespace?: unknown }
  return (name === undefined || typeof name === "string") && (namespace === undefined || typeof namespace === "string")
}
