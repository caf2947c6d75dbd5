// An admin server (both listeners on loopback, its own Scope) and the sidecar it reports on,
// announcing the admin's control port to discovery: how the federation tests stand up "this"
// admin among peers found through a shared discovery directory.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Admin from "../../src/admin/adminServer.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import type { Log } from "../../src/iip/log.ts"
import type { Sidecar, SidecarOptions } from "../../src/sidecar/sidecar.ts"
import type { Cleanup } from "./iipRaw.ts"
import { quietLog, type RunningSidecar, sidecarConfig, startSidecar } from "./sidecarHarness.ts"

export interface AdminedSidecar {
  readonly running: RunningSidecar
  /** The admin control listener's port (announced as the sidecar's admin port). */
  readonly control: number
}

/** The admin requiring `token`, then the sidecar `config` describes (logging to `log`, with `options`), announcing the control port. */
export const startAdminedSidecar = async (
  cleanup: Cleanup,
  token: string,
  config: Partial<SidecarConfig> & Pick<SidecarConfig, "service">,
  log: Log = quietLog,
  options: SidecarOptions = {}
): Promise<AdminedSidecar> => {
  const scope = await Effect.runPromise(Scope.make())
  cleanup.add(() => Effect.runPromise(Scope.close(scope, Exit.void)))
  let sidecar: Sidecar | undefined
  const addresses = await Effect.runPromise(Admin.make({ admin: "127.0.0.1:0", control: "127.0.0.1:0", token }, () => sidecar, { log }).pipe(Scope.provide(scope)))
  const running = await startSidecar(cleanup, sidecarConfig(config), log, { ...options, adminPort: addresses.control.port, ownListeners: [addresses.readOnly, addresses.control] })
  sidecar = running.sidecar
  return { running, control: addresses.control.port }
}
