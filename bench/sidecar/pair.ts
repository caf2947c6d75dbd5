// What the sidecar bench knows of a path's two hops, whatever runs them (iip-mesh sidecars, nginx,
// haproxy): client -> A -> B -> app, the pids it reads /proc for, and how to stop each.
import type { ChildProcess } from "node:child_process"

export interface Hop {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** Ends the process and resolves once it has exited. */
  readonly stop: () => Promise<void>
}

export interface ProxyPair {
  readonly a: Hop
  readonly b: Hop
  /** Where the client sends: A's listening address. */
  readonly entry: { readonly host: string; readonly port: number }
}
