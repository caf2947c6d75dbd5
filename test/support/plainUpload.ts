// A sidecar A whose service `legacy` is a plain IIP service (one packet a request), for the tests of
// the request bodies A gathers whole before sending (h1-body-limit, h2-body-limit): the bodies the
// service got, by length, and A's access log records, for asserting that a refused body reached
// nothing and was counted; plainUploadSuite sets one up for a describe block's tests.
import type { IncomingRequest } from "../../src/iip/server.ts"
import { afterAll, beforeAll } from "vitest"
import { Cleanup } from "./iipRaw.ts"
import { startServer } from "./meshTest.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { captureAccessLog, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "./sidecarHarness.ts"

/** A plain IIP service takes one packet (outbound.ts's PLAIN_BODY_LIMIT). */
export const PLAIN_LIMIT = 16 * 1024 * 1024

export interface Access {
  readonly status: number
  readonly error?: { readonly hop: string; readonly reason: string }
}

export interface PlainUpload {
  readonly a: RunningSidecar
  /** The bodies the plain service got, by length, in order. */
  readonly received: Array<number>
  /** A's access log records from now on. */
  readonly access: Array<Access>
}

/**
 * The plain service (`instances` of it, each an endpoint) answers each of `paths` with
 * `answer(length)`; A routes `legacy` to it, its access log on, with `settings` over the test defaults.
 */
export const startPlainUpload = async (
  cleanup: Cleanup,
  paths: Record<string, (length: number) => string | Promise<string>>,
  instances = 1,
  settings: Partial<SidecarConfig> = {}
): Promise<PlainUpload> => {
  const received: Array<number> = []
  const endpoints: Array<{ address: string; weight: number }> = []
  for (let i = 0; i < instances; i++) {
    const server = await startServer(cleanup, { mesh: false })
    for (const [path, answer] of Object.entries(paths)) {
      server.handle(path, (request: IncomingRequest) => {
        received.push(request.data.length)
        return answer(request.data.length)
      })
    }
    endpoints.push({ address: `${LOOPBACK}:${server.address.port}`, weight: 1 })
  }
  const access = captureAccessLog(cleanup, (line) => JSON.parse(line) as Access)
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", accessLog: true, tracing: false, endpoints: { legacy: endpoints }, ...settings }))
  return { a, received, access }
}

/** A describe block's plain upload (startPlainUpload): started before its tests, cleaned up after them. */
export interface PlainUploadSuite extends PlainUpload {
  /** The block's cleanup, run after its tests. */
  readonly cleanup: Cleanup
}

/** Registers, in the describe block it is called in, a plain upload on `paths` for its tests; its fields are set once started. */
export const plainUploadSuite = (paths: Record<string, (length: number) => string | Promise<string>>): PlainUploadSuite => {
  const cleanup = new Cleanup()
  const suite = { cleanup } as { -readonly [K in keyof PlainUploadSuite]: PlainUploadSuite[K] }
  beforeAll(async () => {
    Object.assign(suite, await startPlainUpload(cleanup, paths))
  })
  afterAll(() => cleanup.run())
  return suite
}
