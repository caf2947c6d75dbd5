// The gRPC bench's C open-loop generator (grpcOpenLoop.c with grpcFrames.c; its header says what it sends and what it
// checks of an answer), built and driven as the sidecar bench's (sidecar/cLoad.ts): compiled once per
// change of its source or compiler, one long-lived child for the whole open loop, one target per
// path, each slice a `run`. bench/grpc.ts runs it beside its Node generators; without a C compiler,
// or for a message over one DATA frame, it says why and the bench goes on without it.
import { fileURLToPath } from "node:url"
import { buildOpenLoop, CC_INSTALL_HINT, type CLoad, type CProgram, findCc, startCLoad } from "./sidecar/cLoad.ts"
import type { OpenSample } from "./sidecar/nodeLoad.ts"

const here = (name: string): string => fileURLToPath(new URL(`./${name}`, import.meta.url))

export const GRPC_OPEN_LOOP: CProgram = {
  name: "grpcopenloop",
  sources: ["grpcOpenLoop.c", "grpcFrames.c", "sidecar/loopCore.c"].map(here),
  headers: ["grpcH2.h", "sidecar/loopCore.h"].map(here)
}

/** The largest message it sends: one DATA frame of 16,384 bytes, the least every peer takes, with the 5-byte prefix. */
export const C_MAX_MESSAGE_BYTES = 16_384 - 5

/** Answers are waited for 15 s after the last call was due (as the sidecar bench's C generator). */
const GIVE_UP_MS = 15_000

export interface GrpcCLoad {
  /** The child's pid: its CPU is the generator's. */
  readonly pid: number
  /** Target `id`: calls of `path` with `messageBytes` bytes of 0x63 to `host:port` (IPv4), :authority `authority` (undefined: host:port). */
  readonly target: (id: number, host: string, port: number, authority: string | undefined, path: string, messageBytes: number) => Promise<void>
  /** One open-loop slice of `ms` on target `id`, no warm-up. */
  readonly run: (id: number, rate: number, ms: number) => Promise<OpenSample>
  readonly close: () => Promise<void>
}

/** The generator wrapped around a started child (startCLoad). */
export const grpcCLoadOf = (load: CLoad): GrpcCLoad => ({
  pid: load.pid,
  target: async (id, host, port, authority, path, messageBytes) => {
    await load.ask(`target ${id} ${host} ${port} ${authority ?? "-"} ${path} ${messageBytes}`)
  },
  run: (id, rate, ms) => load.run(id, rate, 0, ms, GIVE_UP_MS),
  close: load.close
})

/** The generator, or why there is none here (no C compiler; a message it cannot send). */
export const startGrpcCLoad = async (messageBytes: number, cc: () => string | undefined = findCc): Promise<GrpcCLoad | string> => {
  if (messageBytes > C_MAX_MESSAGE_BYTES) return `the C generator sends messages of ${C_MAX_MESSAGE_BYTES} bytes at most (one DATA frame), not ${messageBytes}`
  const compiler = cc()
  if (compiler === undefined) return `cc not found: ${CC_INSTALL_HINT}`
  const binary = buildOpenLoop(compiler, undefined, GRPC_OPEN_LOOP)!
  return grpcCLoadOf(await startCLoad(binary))
}
