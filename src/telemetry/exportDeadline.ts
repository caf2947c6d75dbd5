// The OTLP/HTTP exporters' agent (tracing.ts), given a deadline for each whole exchange. The
// exporter's own timeout (otlp-exporter-base's sendWithHttp) is `req.setTimeout`, a socket idle
// timeout: a collector that answers 200 with its headers and then trickles the body (or never ends
// it) never lets it fire, and the exporter holds one of its 30 concurrent export slots per request
// until the request ends: 30 such answers and every later export was refused at once, for good.
// The exporter's API cannot abort a request, but it takes the agent (its `httpAgentOptions`
// factory): here the socket a request runs on is destroyed once it has been that request's for
// `deadlineMs` (connect, headers and body together), and the exporter's send ends: before the
// answer's headers with ExportDeadlineExceeded, a failure it does not retry; after a 200's headers
// it takes the spans as sent. Either way BoundedExport (tracing.ts) has given the batch up, and
// counted it, at the same timeout; the slot is what comes back here. A keep-alive socket's deadline
// is armed each time the agent hands it to a request and disarmed when the request gives it back.
// The agent is the one the exporter would have made: otlp-exporter-base's factory, which reads the
// OTLP TLS files (OTEL_EXPORTER_OTLP_CERTIFICATE, ...) from process.env, wrapped.
import * as Data from "effect/Data"
import type * as http from "node:http"
import { createRequire } from "node:module"
import type { Duplex } from "node:stream"

/** An OTLP export's exchange ran past its deadline: its socket was destroyed. */
export class ExportDeadlineExceeded extends Data.TaggedError("ExportDeadlineExceeded")<{ readonly message: string }> {}

/** What the exporter's `httpAgentOptions` takes: the agent for a URL's protocol ("http:" or "https:"). */
type AgentFactory = (protocol: string) => Promise<http.Agent>

const load = createRequire(import.meta.url)

/** The agent factory the OTLP/HTTP trace exporter would use (its env-configured TLS files kept), each agent's exchanges held to `deadlineMs`. */
export const deadlineAgents = (deadlineMs: number): AgentFactory => {
  const { convertLegacyHttpOptions } = load("@opentelemetry/otlp-exporter-base/node-http") as typeof import("@opentelemetry/otlp-exporter-base/node-http")
  const { agentFactory } = convertLegacyHttpOptions({}, "TRACES", "v1/traces", {})
  return async (protocol) => withDeadline(await agentFactory(protocol), deadlineMs)
}

/** `agent`, each socket destroyed once it has served one request for `deadlineMs`. */
const withDeadline = (agent: http.Agent, deadlineMs: number): http.Agent => {
  const timers = new WeakMap<Duplex, NodeJS.Timeout>()
  const disarm = (socket: Duplex): void => {
    clearTimeout(timers.get(socket))
    timers.delete(socket)
  }
  const arm = (socket: Duplex): void => {
    disarm(socket)
    const timer = setTimeout(() => socket.destroy(new ExportDeadlineExceeded({ message: `the collector did not finish answering within ${deadlineMs} ms` })), deadlineMs)
    timer.unref()
    timers.set(socket, timer)
  }
  const create = agent.createConnection.bind(agent)
  const reuse = agent.reuseSocket.bind(agent)
  const keep = agent.keepSocketAlive.bind(agent)
  agent.createConnection = (options, callback) => {
    // Node's agents (the exporter's are) return the socket they create.
    const socket = create(options, callback)
    if (socket) {
      arm(socket)
      socket.once("close", () => disarm(socket))
    }
    return socket
  }
  agent.reuseSocket = (socket, request) => {
    arm(socket)
    reuse(socket, request)
  }
  agent.keepSocketAlive = (socket) => {
    disarm(socket)
    return keep(socket)
  }
  return agent
}
