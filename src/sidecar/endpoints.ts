// Where each service can be reached: per service a weighted set of endpoints (the peers'
// sidecars, or plain IIP servers), each with its own pooled IipClient. Discovery (or static
// configuration) replaces a service's set; the outbound side picks from it for every request.
import { WeightedRoundRobin } from "../balancer/weightedRoundRobin.ts"
import { IipClient } from "../iip/client.ts"
import type { Log } from "../iip/log.ts"
import type { Supervisor } from "../iip/supervisor.ts"

export interface Endpoint {
  readonly service: string
  readonly host: string
  readonly port: number
  readonly weight: number
  /** Where it came from ("static", "mdns", ...), for the admin view. */
  readonly source: string
}

const keys = new WeakMap<object, string>()

/** "host:port" ("[v6]:port"), computed once per endpoint object: pickers ask for it per request. */
export const endpointKey = (endpoint: { readonly host: string; readonly port: number }): string => {
  let key = keys.get(endpoint)
  if (key === undefined) {
    key = endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`
    keys.set(endpoint, key)
  }
  return key
}

export interface EndpointRegistryOptions {
  readonly node: string
  readonly requestTimeoutMs: number
  readonly log: Log
  readonly supervisor: Supervisor
}

interface ServiceSet {
  readonly endpoints: ReadonlyArray<Endpoint>
  readonly picker: WeightedRoundRobin<Endpoint>
}

export class EndpointRegistry {
  private readonly services = new Map<string, ServiceSet>()
  /** Endpoints that just refused a request, and until when (Date.now()) pickers avoid them. */
  private readonly downUntil = new Map<string, number>()
  private readonly clients = new Map<string, IipClient>()
  private readonly options: EndpointRegistryOptions

  constructor(options: EndpointRegistryOptions) {
    this.options = options
  }

  /** Replaces the endpoints of `service`; clients of endpoints no longer used by any service close. */
  set(service: string, endpoints: ReadonlyArray<Endpoint>): void {
    if (endpoints.length === 0) this.services.delete(service)
    else this.services.set(service, { endpoints, picker: new WeightedRoundRobin(endpoints) })
    const used = new Set<string>()
    for (const set of this.services.values()) for (const endpoint of set.endpoints) used.add(endpointKey(endpoint))
    for (const [key, client] of this.clients) {
      if (!used.has(key)) {
        client.close()
        this.clients.delete(key)
      }
    }
  }

  endpointsOf(service: string): ReadonlyArray<Endpoint> {
    return this.services.get(service)?.endpoints ?? []
  }

  get serviceNames(): ReadonlyArray<string> {
    return [...this.services.keys()]
  }

  /**
   * The next endpoint for `service` by weight, skipping `exclude` and endpoints marked down (unless
   * nothing else is left); undefined when it has none.
   */
  pick(service: string, exclude: ReadonlySet<string> = new Set()): Endpoint | undefined {
    const set = this.services.get(service)
    if (set === undefined) return undefined
    const now = Date.now()
    const up = (e: Endpoint) => !exclude.has(endpointKey(e)) && (this.downUntil.get(endpointKey(e)) ?? 0) <= now
    return set.picker.pick(up) ?? set.picker.pick((e) => !exclude.has(endpointKey(e)))
  }

  /** Keeps pickers away from an endpoint for `ms` (it refused a request without running it). */
  markDown(endpoint: Endpoint, ms: number): void {
    this.downUntil.set(endpointKey(endpoint), Date.now() + ms)
  }

  /** The pooled client of an endpoint, made on first use. */
  clientOf(endpoint: Endpoint): IipClient {
    const key = endpointKey(endpoint)
    let client = this.clients.get(key)
    if (client === undefined) {
      client = new IipClient({
        host: endpoint.host,
        port: endpoint.port,
        node: this.options.node,
        requestTimeoutMs: this.options.requestTimeoutMs,
        log: this.options.log,
        supervisor: this.options.supervisor
      })
      this.clients.set(key, client)
    }
    return client
  }

  close(): void {
    for (const client of this.clients.values()) client.close()
    this.clients.clear()
    this.services.clear()
  }
}
