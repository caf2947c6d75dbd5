// Which open-loop generator drives the sidecar bench's fixed-rate phase (--generator c|node): the C
// one (openLoop.c through cLoad.ts, one child for the whole phase; the default) or the Node one
// (nodeLoad.ts, in the bench's own process; also the fallback where there is no C compiler). Both
// give nodeLoad.ts's OpenSample; the bench reads the generator's CPU from `pid`.
import { buildOpenLoop, CC_INSTALL_HINT, findCc, startCLoad } from "./cLoad.ts"
import { makeTarget, type OpenSample, openLoop, type Target } from "./nodeLoad.ts"
import { makePayload } from "./request.ts"

export type GeneratorKind = "c" | "node"
export const GENERATORS: ReadonlyArray<GeneratorKind> = ["c", "node"]

/** A give-up as long as the Node loop's watchdog: answers are waited for 15 s after the last was due. */
const GIVE_UP_MS = 15_000

export interface Entry {
  readonly host: string
  readonly port: number
  readonly hostHeader: string | undefined
}

export interface OpenGenerator<M> {
  readonly kind: GeneratorKind
  /** The process whose CPU is the generator's: the C child, or this process (the Node loop runs in it, beside the bench). */
  readonly pid: number
  /** A round's targets, one per path, `maxSockets` connections each (the last round's connections closed). */
  readonly targets: (entries: ReadonlyMap<M, Entry>, maxSockets: number) => Promise<void>
  /** One open-loop slice on `mode`'s target, `ms` long, no warm-up. */
  readonly run: (mode: M, rate: number, ms: number) => Promise<OpenSample>
  /** Closes the connections (and, for C, the child). */
  readonly close: () => Promise<void>
}

/** The generator asked for, or the Node one with the line saying why (no C compiler: `cc` found none). */
export const startGenerator = async <M>(asked: GeneratorKind, cc: () => string | undefined = findCc): Promise<{ readonly generator: OpenGenerator<M>; readonly note: string | undefined }> => {
  const compiler = asked === "c" ? cc() : undefined
  const binary = compiler === undefined ? undefined : buildOpenLoop(compiler)
  if (binary === undefined) {
    const note = asked === "c" ? `cc not found: ${CC_INSTALL_HINT} (the open loop runs on the Node generator meanwhile)` : undefined
    return { generator: nodeGenerator(), note }
  }
  const load = await startCLoad(binary)
  const ids = new Map<M, number>()
  return {
    note: undefined,
    generator: {
      kind: "c",
      pid: load.pid,
      targets: async (entries, maxSockets) => {
        for (const [mode, entry] of entries) {
          const id = ids.get(mode) ?? ids.size
          ids.set(mode, id)
          await load.target(id, entry.host, entry.port, entry.hostHeader, maxSockets)
        }
      },
      run: (mode, rate, ms) => load.run(ids.get(mode)!, rate, 0, ms, GIVE_UP_MS),
      close: load.close
    }
  }
}

const nodeGenerator = <M>(): OpenGenerator<M> => {
  const payload = makePayload()
  let targets = new Map<M, Target>()
  const destroy = () => {
    for (const target of targets.values()) target.agent.destroy()
    targets = new Map()
  }
  return {
    kind: "node",
    pid: process.pid,
    targets: async (entries, maxSockets) => {
      destroy()
      for (const [mode, entry] of entries) targets.set(mode, makeTarget(entry.host, entry.port, entry.hostHeader, maxSockets))
    },
    run: (mode, rate, ms) => openLoop(targets.get(mode)!, payload, rate, 0, ms),
    close: async () => destroy()
  }
}
