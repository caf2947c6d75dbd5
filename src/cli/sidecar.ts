// `iip-mesh sidecar [flags]`: loads the configuration (flags > environment > config file >
// defaults), starts the admin server, then the sidecar, prints one line with its addresses and
// runs until SIGTERM/SIGINT, which drains it (src/sidecar/sidecar.ts) before exiting 0. It collects
// the start-up's garbage before it says it is ready, then gives memory back after bursts
// (memoryRelease.ts, `--idle-gc`). Its connection caps are fitted to the open-file limit first (fileLimit.ts).
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import * as Admin from "../admin/adminServer.ts"
import { parseFlags } from "../config/flags.ts"
import { loadSidecarConfig } from "../config/loadSidecarConfig.ts"
import { settings } from "../config/settings.ts"
import { type Log, stderrLog } from "../iip/log.ts"
import { defaultMaxConnections } from "../iip/server.ts"
import type { IdentityClient } from "../identity/identityClient.ts"
import type { SidecarConfig } from "../config/sidecarConfig.ts"
import { ADMIN_LIMITS } from "../admin/listenerLimits.ts"
import { type FileCaps, fitToFileLimit, readFileLimit } from "../sidecar/fileLimit.ts"
import type { Sidecar } from "../sidecar/sidecar.ts"
import * as SidecarLive from "../sidecar/sidecar.ts"
import { splitAddress } from "../sidecar/sidecar.ts"
import { leaveMaglev } from "./compilerTiers.ts"
import { requestActivity, startMemoryRelease } from "./memoryRelease.ts"
import { setOutputFlushMs } from "./runMain.ts"

export const sidecarHelp = (): string =>
  [
    "iip-mesh sidecar: carries the local app's HTTP over IIP to other services' sidecars",
    "",
    "settings (flag / environment variable): ",
    ...settings.map((s) => `  ${s.flag.padEnd(18)} ${s.env.padEnd(26)} ${s.help}`),
    `  ${"--config FILE".padEnd(18)} ${"IIP_MESH_CONFIG".padEnd(26)} a JSON file with any of the settings above (keys as in /config)`
  ].join("\n")

/** The caps of `config` fitted to this process's open-file limit; says once on `log` when they had to shrink, and to what. */
const fittedCaps = (config: SidecarConfig, log: Log): FileCaps => {
  const wanted: FileCaps = {
    inboundConnections: defaultMaxConnections,
    appConnections: config.maxAppConnections,
    adminConnections: ADMIN_LIMITS.maxConnections,
    appPoolSize: config.appPoolSize,
    maxTunnels: config.maxTunnels
  }
  const files = readFileLimit()
  if (files === undefined) return wanted
  const caps = fitToFileLimit(wanted, files.limit, files.open)
  if (caps !== wanted) {
    log("open-file-limit", {
      limit: files.limit,
      openAtStart: files.open,
      caps,
      wanted,
      message: "the open-file limit is below what the connection caps can hold: they are scaled down to fit it; raise it (ulimit -n, LimitNOFILE, a container's nofile) to keep them"
    })
  }
  return caps
}

export const runSidecar = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    if (argv.includes("--help")) {
      process.stdout.write(`${sidecarHelp()}\n`)
      return
    }
    const loaded = loadSidecarConfig({ flags: parseFlags(argv), env: process.env })
    if (Result.isFailure(loaded)) {
      process.stderr.write(`iip-mesh sidecar: ${loaded.failure.message}\n`)
      process.exitCode = 2
      return
    }
    const caps = fittedCaps(loaded.success, stderrLog)
    const config = { ...loaded.success, maxAppConnections: caps.appConnections, appPoolSize: caps.appPoolSize, maxTunnels: caps.maxTunnels }
    setOutputFlushMs(config.outputFlushTimeoutMs)
    const listeners = Admin.adminListenersOf(config)
    if (Result.isFailure(listeners)) {
      process.stderr.write(`iip-mesh sidecar: ${listeners.failure.message}\n`)
      process.exitCode = 2
      return
    }
    let sidecar: Sidecar | undefined
    const admin = yield* Admin.make(listeners.success, () => sidecar, { ipv6SourcePrefix: config.ipv6SourcePrefix, maxConnections: caps.adminConnections })
    // The identity comes first: a sidecar that is to speak mTLS does not start without its
    // certificate (the admin says not ready meanwhile; the client retries an unreachable issuer).
    let identity: IdentityClient | undefined
    if (config.identityIssuer !== null || config.identityDevCaDir !== null) {
      const obtained = yield* Effect.result((yield* Effect.promise(() => import("./sidecarIdentity.ts"))).sidecarIdentity(config, stderrLog))
      if (Result.isFailure(obtained)) {
        process.stderr.write(`iip-mesh sidecar: ${obtained.failure.message}\n`)
        process.exitCode = 2
        return
      }
      identity = obtained.success
    }
    // mTLS asked for without credentials (or unreadable ones) is a configuration problem, said as one.
    // The control listener's port is announced when peers reach it where they reach the inbound one.
    const controlHost = admin.control.host
    const announceAdmin = controlHost === "0.0.0.0" || controlHost === "::" || controlHost === splitAddress(config.inbound).host
    const options = { ...(announceAdmin ? { adminPort: admin.control.port } : {}), ...(identity === undefined ? {} : { credentials: identity }), ownListeners: [admin.readOnly, admin.control], inboundMaxConnections: caps.inboundConnections }
    const started = yield* SidecarLive.make(config, stderrLog, options).pipe(
      Effect.catchTag("MtlsUnavailable", (error) =>
        Effect.sync(() => {
          process.stderr.write(`iip-mesh sidecar: ${error.message}\n`)
          process.exitCode = 2
          return undefined
        }))
    )
    if (started === undefined) return
    sidecar = started
    if (identity !== undefined) {
      const held = identity
      started.telemetry.metrics.watchBundleRefreshes(() => held.status().bundleRefreshes)
    }
    // Before the ready line: its first collection (the start-up's garbage) pauses the process.
    if (config.idleGcMs !== null) {
      const stop = startMemoryRelease(config.idleGcMs, stderrLog, requestActivity(started.telemetry.metrics), (wake) => started.telemetry.metrics.onNextRequest(wake), started.closeIdleAppSockets)
      yield* Effect.addFinalizer(() => Effect.sync(stop))
    }
    // Started: bursts from here on compile without Maglev (compilerTiers.ts says why not at start-up).
    leaveMaglev()
    const line = {
      event: "sidecar-ready",
      service: config.service,
      node: config.node,
      outbound: `${sidecar.outbound.host}:${sidecar.outbound.port}`,
      inbound: `${sidecar.inbound.host}:${sidecar.inbound.port}`,
      admin: `${admin.readOnly.host}:${admin.readOnly.port}`,
      adminControl: `${admin.control.host}:${admin.control.port}`,
      ...(identity === undefined ? {} : { identity: identity.status().spiffeId, identityNotAfter: identity.status().notAfter })
    }
    process.stdout.write(`${JSON.stringify(line)}\n`)
    return yield* Effect.never
  }).pipe(Effect.scoped)
