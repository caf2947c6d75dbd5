// A setting's text from the environment or from flags (a flag may be repeated) into the value
// loadSidecarConfig.ts validates: durations (15s, 500ms), byte counts (64MiB), lists, booleans,
// none/off for null, endpoint lists. Text that is none of these is kept as it came, for the schema
// to reject with the setting's name.
import type { Key } from "./settings.ts"

/**
 * "SERVICE=HOST:PORT[#WEIGHT][;identity=SPIFFE-ID][;security=mtls|tls|plain][;ca=FILE][;version=V]" entries into
 * the endpoints shape; malformed entries (and unknown keys) are kept for the schema to reject.
 */
export const parseEndpointList = (entries: ReadonlyArray<string>): Record<string, Array<Record<string, unknown>>> => {
  // A Map: a service named __proto__ or constructor is kept as a name for the schema to refuse, not looked up on Object.prototype.
  const out = new Map<string, Array<Record<string, unknown>>>()
  for (const entry of entries.flatMap((e) => e.split(",")).map((e) => e.trim()).filter((e) => e !== "")) {
    const [head = "", ...options] = entry.split(";")
    const eq = head.indexOf("=")
    const service = eq === -1 ? head : head.slice(0, eq)
    const rest = eq === -1 ? "" : head.slice(eq + 1)
    const hash = rest.lastIndexOf("#")
    const address = hash === -1 ? rest : rest.slice(0, hash)
    const weight = hash === -1 ? 1 : /^\d+$/.test(rest.slice(hash + 1)) ? Number(rest.slice(hash + 1)) : rest.slice(hash + 1)
    const spec: Record<string, unknown> = { address, weight }
    for (const option of options) {
      const split = option.indexOf("=")
      if (split > 0) spec[option.slice(0, split).trim()] = option.slice(split + 1).trim()
    }
    const list = out.get(service)
    if (list === undefined) out.set(service, [spec])
    else list.push(spec)
  }
  return Object.fromEntries(out)
}

/** "64MiB", "512KiB", "1GiB" or a bare number of bytes; anything else is kept for the schema to reject. */
const parseBytes = (text: string): unknown => {
  const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(text.trim())
  if (match === null) return text
  return Number(match[1]) * (match[2] === "GiB" ? 1024 ** 3 : match[2] === "MiB" ? 1024 ** 2 : match[2] === "KiB" ? 1024 : 1)
}

/** "15s", "500ms", "2m" or a bare number of milliseconds; anything else is kept for the schema to reject. */
const parseDurationMs = (text: string): unknown => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (match === null) return text
  const value = Number(match[1])
  return Math.round(match[2] === "s" ? value * 1000 : match[2] === "m" ? value * 60_000 : value)
}

export const fromText = (key: Key, values: ReadonlyArray<string>): unknown => {
  const last = values[values.length - 1]!
  switch (key) {
    case "endpoints":
      return parseEndpointList(values)
    case "dnsSrv":
    case "kubernetes":
      return Object.fromEntries(
        values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "").map((e) => [e.slice(0, Math.max(0, e.indexOf("="))), e.slice(e.indexOf("=") + 1)])
      )
    case "dnsServers":
    case "kubernetesRoutes":
      return values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "")
    case "requestTimeoutMs":
    case "drainTimeoutMs":
    case "outputFlushTimeoutMs":
    case "ejectionBaseMs":
    case "ejectionMaxMs":
    case "bodyIdleTimeoutMs":
    case "answerIdleTimeoutMs":
    case "inboundDefaultTimeoutMs":
    case "restartWindowMs":
    case "busyPingAfterMs":
    case "busyPingTimeoutMs":
    case "tlsHandshakeTimeoutMs":
    case "authzPolicyPollMs":
    case "routesPollMs":
    case "identityRequestTimeoutMs":
    case "identityBundleRefreshMs":
    case "federationTimeoutMs":
    case "federationStaleMs":
    case "upgradeIdleTimeoutMs":
    case "upgradeStallTimeoutMs":
    case "metricSeriesIdleMs":
      return parseDurationMs(last)
    case "perTryTimeoutMs":
    case "healthCheckIntervalMs":
    case "firstPacketTimeoutMs":
    case "packetTimeoutMs":
    case "idleTimeoutMs":
    case "writeTimeoutMs":
    case "slowTryFloorMs":
    case "idleGcMs":
      return last === "" || last === "none" || last === "off" ? null : parseDurationMs(last)
    case "maxQueuedBytesPerConnection":
    case "maxQueuedBytes":
    case "maxQueuedWriteBytes":
    case "maxWholeBodyBytes":
    case "federationMaxBytes":
    case "traceStoreBytes":
    case "readSlabPoolBytes":
    case "appH2MaxHeldBytes":
    case "appPoolMaxHeldBytes":
    case "outboundH2MaxHeldBodyBytes":
    case "outboundMaxHeldAnswerBytes":
      return parseBytes(last)
    case "maxQueuedRequestsPerConnection":
    case "maxQueuedRequests":
    case "maxChannelsPerConnection":
    case "maxChannels":
    case "maxTunnels":
    case "maxTunnelsPerPeer":
    case "maxAppConnections":
      return /^\d+$/.test(last) ? Number(last) : last
    case "hashKey":
      return last === "" || last === "none" ? null : last
    case "weight":
    case "maxPendingPerEndpoint":
    case "retryBudgetRatio":
    case "retryBudgetMinPerSecond":
    case "ejectConsecutiveFailures":
    case "ejectErrorRatePercent":
    case "maxEjectedPercent":
    case "appPoolSize":
    case "h2MaxStreams":
    case "appH2MaxStreams":
    case "rateLimitKeys":
    case "ipv6SourcePrefix":
    case "goldenRoutes":
    case "tapListeners":
    case "tapRate":
    case "tapQueue":
    case "federationMaxPeers":
      return /^-?\d+(?:\.\d+)?$/.test(last) ? Number(last) : last
    case "traceStoreRate":
      return last === "" || last === "off" || last === "none" ? null : /^\d+$/.test(last) ? Number(last) : last
    case "mdnsInterface":
      return last === "" || last === "all" ? null : last
    case "mtls":
      return last === "" || last === "auto" ? null : last
    case "tlsCredentialsDir":
      return last === "" || last === "none" ? null : last
    case "mdns":
    case "accessLog":
    case "tracing":
    case "compress":
    case "dialLocalEndpoints":
      return last === "" || last === "true" || last === "1" ? true : last === "false" || last === "0" ? false : last
    case "app":
      return last === "none" ? null : last
    case "authzPolicy":
    case "routes":
    case "appVersion":
    case "adminToken":
    case "adminTokenFile":
    case "identityIssuer":
    case "identityTokenFile":
    case "identityJoinTokenFile":
    case "trustBundleFile":
    case "identityDevCaDir":
      return last === "" || last === "none" ? null : last
    default:
      return last
  }
}
