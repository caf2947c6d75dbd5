// The events of a sidecar's inbound IIP listener that a peer can repeat at will (src/iip/log.ts
// throttledEvents: at most 20 lines a minute an event) are counted in /metrics whatever reaches the
// log: iip_mesh_inbound_peer_events_total{event} every one, and _lines_suppressed_total those whose
// line was held back; the count still held back when the sidecar stops is written then
// (log-lines-suppressed), not lost. A stranger opening connections to B and sending status byte 9.
import { afterEach, describe, expect, it } from "vitest"
import type { Log } from "../../src/iip/log.ts"
import { Cleanup, RawClient } from "../support/iipRaw.ts"
import { parsePrometheusText, samples, value } from "../support/prometheusText.ts"
import { sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

const attempts = 40

describe("a peer's repeated faults at the inbound listener", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it(`${attempts} connections sending status 9: counted in /metrics, all of them; the lines bounded; the count held back written at stop`, async () => {
    const lines: Array<{ event: string; fields: Record<string, unknown> }> = []
    const log: Log = (event, fields) => void lines.push({ event, fields: { ...fields } })
    const app = await startApp(cleanup, (_req, res) => res.end("ok"))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }), log)
    const admin = await startAdmin(cleanup, b)
    for (let i = 0; i < attempts; i += 10) {
      await Promise.all(Array.from({ length: 10 }, async () => {
        const raw = await RawClient.connect(b.sidecar.inbound.port, cleanup)
        raw.write(Buffer.of(9))
        await raw.waitClose(5000)
      }))
    }
    const written = lines.filter((line) => line.event === "protocol-violation").length
    expect(written).toBeGreaterThan(0)
    expect(written).toBeLessThanOrEqual(20)

    const m = parsePrometheusText(await (await fetch(`${admin}/metrics`)).text())
    expect(m.get("iip_mesh_inbound_peer_events_total")!.type).toBe("counter")
    expect(value(m, "iip_mesh_inbound_peer_events_total", { event: "protocol-violation" })).toBe(attempts)
    expect(value(m, "iip_mesh_inbound_peer_event_lines_suppressed_total", { event: "protocol-violation" })).toBe(attempts - written)
    // Every bounded event has its series from the start (rate() sees the first one).
    expect(samples(m, "iip_mesh_inbound_peer_events_total").map((s) => [s.labels["event"], s.value]).sort()).toStrictEqual(
      [["handler-crashed", 0], ["no-first-packet", 0], ["packet-timeout", 0], ["protocol-violation", attempts], ["push-failed", 0], ["stalled", 0], ["tls-refused", 0]]
    )

    // No later line to carry the count: the stop writes it.
    expect(lines.filter((line) => line.event === "log-lines-suppressed")).toStrictEqual([])
    await b.stop()
    expect(lines.filter((line) => line.event === "log-lines-suppressed")).toStrictEqual([
      { event: "log-lines-suppressed", fields: { of: "protocol-violation", suppressed: attempts - written } }
    ])
  })
})
