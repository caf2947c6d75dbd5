// An endpoint's pooled client (EndpointRegistry.clientOf) is keyed by its address, its security and
// whether it is of the registry's own service: only that one may reach the sidecar's own inbound
// (src/iip/ownListeners.ts), so it never shares a client with another service's endpoint at the
// same address. The key is cached per endpoint object; two registries in one process (the demo's
// sidecars, tests) that see the same object must each get their own answer.
import { afterEach, describe, expect, it } from "vitest"
import { OwnListeners } from "../../src/iip/ownListeners.ts"
import { Supervisor } from "../../src/iip/supervisor.ts"
import { type Endpoint, EndpointRegistry } from "../../src/sidecar/endpoints.ts"
import { balancing } from "../support/bareRegistry.ts"

describe("an endpoint's client key", () => {
  const registries: Array<EndpointRegistry> = []
  afterEach(() => {
    for (const registry of registries.splice(0)) registry.close()
  })
  const registryOf = (service: string) => {
    const registry = new EndpointRegistry({ node: "test", requestTimeoutMs: 1000, compress: false, maxMetaBytes: 65_535, balancing, log: () => {}, supervisor: new Supervisor(), ownListeners: new OwnListeners(), service })
    registries.push(registry)
    return registry
  }

  it("an endpoint of the registry's own service never shares a client with another service's at the same address, whichever registry saw it first", () => {
    const own: Endpoint = { service: "b", host: "127.0.0.1", port: 7000, weight: 1, source: "static" }
    const other: Endpoint = { service: "c", host: "127.0.0.1", port: 7000, weight: 1, source: "static" }
    // Sidecar "a" in the same process sees the same endpoint object first: for it, not its own.
    registryOf("a").clientOf(own)
    const b = registryOf("b")
    expect(b.clientOf(own)).not.toBe(b.clientOf(other))
  })
})
