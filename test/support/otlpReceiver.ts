// A real OTLP/HTTP receiver on 127.0.0.1 (port 0) for tests: it records every POST (path,
// content type, headers, body) and answers as a collector does (an empty protobuf message, or
// `{}` for JSON), or with the error status it was told to give. `next()` waits for the next request, so a test synchronises on the export
// itself, never on a sleep. `spansOf` reads an OTLP/JSON body into flat spans.
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export interface OtlpRequest {
  readonly path: string
  readonly contentType: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

export interface OtlpReceiver {
  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (no path). */
  readonly url: string
  /** Every request so far, in order of arrival. */
  readonly requests: ReadonlyArray<OtlpRequest>
  /** The next request not yet taken by `next`, waiting for it if need be. */
  next(): Promise<OtlpRequest>
  close(): Promise<void>
}

export const startOtlpReceiver = async (options: { readonly status?: number } = {}): Promise<OtlpReceiver> => {
  const status = options.status ?? 200
  const requests: Array<OtlpRequest> = []
  const waiting: Array<(request: OtlpRequest) => void> = []
  let taken = 0
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (chunk: Buffer) => chunks.push(chunk))
    req.on("end", () => {
      const contentType = req.headers["content-type"] ?? ""
      const request = { path: req.url ?? "", contentType, headers: req.headers, body: Buffer.concat(chunks) }
      requests.push(request)
      const json = contentType.startsWith("application/json")
      if (status !== 200) {
        res.writeHead(status, { "content-type": "text/plain" })
        res.end("refused")
      } else {
        res.writeHead(200, { "content-type": json ? "application/json" : "application/x-protobuf" })
        res.end(json ? "{}" : "")
      }
      const waiter = waiting.shift()
      if (waiter !== undefined) {
        taken++
        waiter(request)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    next: () => {
      if (taken < requests.length) return Promise.resolve(requests[taken++]!)
      return new Promise((resolve) => waiting.push(resolve))
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}

export interface ExportedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly service: string
  readonly resource: Readonly<Record<string, unknown>>
  readonly attributes: Readonly<Record<string, unknown>>
}

interface JsonAttribute {
  readonly key: string
  readonly value: Readonly<Record<string, unknown>>
}

const attributesOf = (list: ReadonlyArray<JsonAttribute> | undefined): Record<string, unknown> =>
  Object.fromEntries((list ?? []).map(({ key, value }) => [key, Object.values(value)[0]]))

/** The spans of an OTLP/JSON ExportTraceServiceRequest, each with its resource's attributes. */
export const spansOf = (body: Buffer): Array<ExportedSpan> => {
  const request = JSON.parse(body.toString("utf8")) as {
    resourceSpans: ReadonlyArray<{
      resource: { attributes?: ReadonlyArray<JsonAttribute> }
      scopeSpans: ReadonlyArray<{
        spans: ReadonlyArray<{
          traceId: string
          spanId: string
          parentSpanId?: string
          name: string
          kind: number
          attributes?: ReadonlyArray<JsonAttribute>
        }>
      }>
    }>
  }
  return request.resourceSpans.flatMap(({ resource, scopeSpans }) => {
    const resourceAttributes = attributesOf(resource.attributes)
    return scopeSpans.flatMap(({ spans }) =>
      spans.map((span) => ({
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId ?? "",
        name: span.name,
        kind: span.kind,
        service: String(resourceAttributes["service.name"]),
        resource: resourceAttributes,
        attributes: attributesOf(span.attributes)
      }))
    )
  })
}
