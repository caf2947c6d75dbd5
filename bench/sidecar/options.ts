// The sidecar bench's paths, phases and flags (see the header of bench/sidecar.ts).
import { fileURLToPath } from "node:url"
import { Data } from "effect"
import { benchArgs } from "../args.ts"
import { GENERATORS, type GeneratorKind } from "./generator.ts"

/** A flag names something the bench does not have. */
export class BadFlag extends Data.TaggedError("BadFlag")<{ readonly message: string }> {}

/**
 * direct: client -> app. The others go through two proxies, client -> A -> B -> app: meshed, two
 * sidecars with their defaults (tracing on, mTLS on: they have credentials); mtls-off, the same
 * with --mtls off (plain IIP between them; mTLS's cost is meshed - mtls-off); untraced, two
 * sidecars with --tracing false (mTLS on); nginx, nginx -> nginx; haproxy, haproxy -> haproxy;
 * relay-bytes and relay-http, two bare Node relays (nodeRelays.ts), a byte relay and a plain HTTP
 * reverse proxy, relay-tls, the byte relays with the mesh's mTLS between them, and mesh-plain, two sidecars with --mtls off and --tracing false: the sidecar's
 * layers ablated (only with --only: the default run leaves these three out).
 */
export type Mode = "direct" | "meshed" | "mtls-off" | "untraced" | "nginx" | "haproxy" | "relay-bytes" | "relay-tls" | "relay-http" | "mesh-plain"
export const MODES: ReadonlyArray<Mode> = ["direct", "meshed", "mtls-off", "untraced", "nginx", "haproxy", "relay-bytes", "relay-tls", "relay-http", "mesh-plain"]
/** The paths a run without --only takes. */
const DEFAULT_MODES: ReadonlyArray<Mode> = ["direct", "meshed", "mtls-off", "untraced", "nginx", "haproxy"]
/** The modes that go through a pair of proxies. */
export type Proxied = Exclude<Mode, "direct">
export const PROXIED: ReadonlyArray<Proxied> = ["meshed", "mtls-off", "untraced", "nginx", "haproxy", "relay-bytes", "relay-tls", "relay-http", "mesh-plain"]
/** The pairs of iip-mesh sidecars. */
export type Meshed = "meshed" | "mtls-off" | "untraced" | "mesh-plain"
export const isMeshed = (mode: Mode): mode is Meshed => mode === "meshed" || mode === "mtls-off" || mode === "untraced" || mode === "mesh-plain"
/** The bare Node relay pairs. */
export type Relay = "relay-bytes" | "relay-tls" | "relay-http"
export const isRelay = (mode: Mode): mode is Relay => mode === "relay-bytes" || mode === "relay-tls" || mode === "relay-http"

export type Phase = "open" | "saturation" | "memory"
export const PHASES: ReadonlyArray<Phase> = ["open", "saturation", "memory"]

/**
 * The sidecar as shipped: the compiled CLI (dist/, which the bench rebuilds before it starts) with
 * the node flags and environment bin/iip-mesh.js and the image give it. --sidecar-main,
 * --sidecar-node-flags and --sidecar-env replace them (e.g. --sidecar-main src/cli/main.ts to run the TypeScript sources).
 */
export const DEFAULT_SIDECAR_MAIN = fileURLToPath(new URL("../../dist/cli/main.js", import.meta.url))
export const SHIPPED_NODE_FLAGS = "--max-semi-space-size=2 --v8-pool-size=1"
/** The environment bin/iip-mesh.js's first line gives node (glibc's malloc arenas). */
export const SHIPPED_ENV = "MALLOC_ARENA_MAX=2"

export interface Options {
  readonly quick: boolean
  readonly rounds: number
  readonly warmupMs: number
  readonly measureMs: number
  /**
   * The saturation phase's warm-up round: every path runs wrk this long before the measured rounds
   * (default: as long as a round; 0: none). Reported, kept out of the medians.
   */
  readonly saturationWarmupMs: number
  /** The open loop's window is run in slices of this length, the paths taking turns (see bench/sidecar.ts). */
  readonly sliceMs: number
  readonly rate: number
  /** The open loop's generator: the C one (openLoop.c, the default) or the Node one (nodeLoad.ts). */
  readonly generator: GeneratorKind
  readonly inflight: number
  readonly modes: ReadonlyArray<Mode>
  readonly phases: ReadonlyArray<Phase>
  readonly cpuProfDir: string | undefined
  /** Extra node flags for the sidecar processes (e.g. `--max-semi-space-size=2`), to try settings without editing src. */
  readonly sidecarNodeFlags: ReadonlyArray<string>
  /** Variables set for the sidecar processes on top of the bench's own environment (NAME=VALUE). */
  readonly sidecarEnv: Readonly<Record<string, string>>
  /** The script `node` runs as the sidecar (`node <flags> <sidecarMain> sidecar ...`). */
  readonly sidecarMain: string
  /** Where each sidecar's other stdout lines go (sidecar-<name>.log: e.g. node's --trace-gc); undefined: dropped. */
  readonly sidecarLogDir: string | undefined
  /** The memory phase reads the RSS once more this long after its 10 s reading (0: not). */
  readonly memoryLingerMs: number
}

export const parseArgs = (args: ReadonlyArray<string>): Options => {
  const { quick, value, number } = benchArgs(args)
  const subset = <A extends string>(flag: string, all: ReadonlyArray<A>, byDefault: ReadonlyArray<A> = all): ReadonlyArray<A> => {
    const v = value(flag)
    if (v === undefined) return byDefault
    const asked = v.split(",")
    const unknown = asked.filter((a) => !(all as ReadonlyArray<string>).includes(a))
    if (unknown.length > 0) throw new BadFlag({ message: `${flag}: unknown ${unknown.join(", ")} (choose from ${all.join(", ")})` })
    return all.filter((a) => asked.includes(a))
  }
  const measureMs = Math.min(60_000, number("--duration", quick ? 3 : 10) * 1000)
  return {
    quick,
    rounds: Math.min(10, Math.round(number("--rounds", quick ? 1 : 3))),
    warmupMs: Math.min(30_000, number("--warmup", quick ? 1 : 2) * 1000),
    measureMs,
    saturationWarmupMs: value("--saturation-warmup") === "0" ? 0 : Math.min(60_000, number("--saturation-warmup", measureMs / 1000) * 1000),
    // Short enough that a pair waiting for its turn is never quiet long enough for the sidecar's
    // idle GC (--idle-gc, 2 s of quiet: a full collection of tens of ms) to run mid-window.
    sliceMs: Math.min(60_000, number("--slice", 0.25) * 1000),
    rate: Math.min(20_000, number("--rate", 1000)),
    generator: generatorOf(value("--generator") ?? "c"),
    inflight: Math.min(1024, Math.round(number("--inflight", 64))),
    modes: subset("--only", MODES, DEFAULT_MODES),
    phases: subset("--phases", PHASES),
    cpuProfDir: value("--cpu-prof-dir"),
    sidecarNodeFlags: (value("--sidecar-node-flags") ?? SHIPPED_NODE_FLAGS).split(" ").filter((flag) => flag !== ""),
    sidecarEnv: parseEnv(value("--sidecar-env") ?? SHIPPED_ENV),
    sidecarMain: value("--sidecar-main") ?? DEFAULT_SIDECAR_MAIN,
    sidecarLogDir: value("--sidecar-log-dir"),
    memoryLingerMs: Math.min(600_000, number("--memory-linger", 0) * 1000)
  }
}

const generatorOf = (name: string): GeneratorKind => {
  const kind = GENERATORS.find((g) => g === name)
  if (kind === undefined) throw new BadFlag({ message: `--generator: unknown ${name} (choose from ${GENERATORS.join(", ")})` })
  return kind
}

/** "NAME=VALUE NAME=VALUE" (--sidecar-env; "" for none). */
export const parseEnv = (text: string): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const word of text.split(" ").filter((w) => w !== "")) {
    const eq = word.indexOf("=")
    if (eq <= 0) throw new BadFlag({ message: `--sidecar-env: expected NAME=VALUE, got ${JSON.stringify(word)}` })
    env[word.slice(0, eq)] = word.slice(eq + 1)
  }
  return env
}
