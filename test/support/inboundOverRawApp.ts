// The inbound side alone, in front of a raw-socket app (rawHttp.ts): sidecar B for service
// `catalog`, untraced, and two clients at its inbound port, one in mesh mode and one speaking plain
// IIP, the two ways a peer reaches an app. For the tests of what the app gets of a peer's request
// (test/sidecar/smuggling.test.ts, header-filter.property.test.ts).
import type { IipClient } from "../../src/iip/client.ts"
import type { Cleanup } from "./iipRaw.ts"
import { startClient } from "./meshTest.ts"
import { type RawApp, startRawApp } from "./rawHttp.ts"
import { sidecarConfig, startSidecar } from "./sidecarHarness.ts"

export const startInboundOverRawApp = async (cleanup: Cleanup): Promise<{ readonly app: RawApp; readonly mesh: IipClient; readonly plain: IipClient }> => {
  const app = await startRawApp(cleanup)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false }))
  return { app, mesh: startClient(cleanup, b.sidecar.inbound.port), plain: startClient(cleanup, b.sidecar.inbound.port, { mesh: false }) }
}
