// Helpers of the budget tests (test/iip/budgets.test.ts): a mesh server in a child process (so
// its RSS is measured alone), its memory figures over IIP, hand-played mesh dialers that say hello
// and then write raw packets, and a bounded wait on the server's own counts (what it read, holds, paused).
import { type ChildProcess, spawn } from "node:child_process"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import type { IipClient } from "../../src/iip/client.ts"
import type { ServerOptions } from "../../src/iip/server.ts"
import { emptyMeta, encodeEnvelope, encodeHello, EnvelopeKind, type Hello, MeshPath } from "../../src/protocol/mesh.ts"
import { type Cleanup, frame, RawClient, withTimeout } from "./iipRaw.ts"
import { helloOf } from "./meshTest.ts"

const childScript = fileURLToPath(new URL("./meshServerChild.ts", import.meta.url))

export const MiB = 1024 * 1024

/** Starts meshServerChild.ts with `options` (and --expose-gc); resolves with its port once it listens. */
export const startServerChild = async (
  cleanup: Cleanup,
  options: ServerOptions = {}
): Promise<{
  readonly port: number
  readonly child: ChildProcess
  readonly memory: () => Promise<Memory>
  readonly until: (condition: (state: ServerState) => boolean, what: string, timeoutMs?: number) => Promise<ServerState>
}> => {
  const child = spawn(process.execPath, ["--expose-gc", childScript], {
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, IIP_TEST_SERVER_OPTIONS: JSON.stringify(options), IIP_TEST_QUIET_HANG: "1" }
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await withTimeout(exited, 5000, `child ${child.pid} to exit`)
  })
  const lines: Array<(line: string) => void> = []
  readline.createInterface({ input: child.stdout! }).on("line", (line) => lines.shift()?.(line))
  const nextLine = (what: string, timeoutMs = 10_000) => withTimeout(new Promise<string>((resolve) => lines.push(resolve)), timeoutMs, what)
  // A node start: with two busy loops on both cores at load 17 it took longer than 10 s.
  const message = JSON.parse(await nextLine("the server child to listen", 60_000)) as { port?: number; error?: string }
  if (message.port === undefined) throw new Error(`server child failed: ${message.error}`)
  /** Its memory, asked on stdin: works while it refuses every request. */
  const memory = async (): Promise<Memory> => {
    const line = nextLine("the child's memory figures")
    child.stdin!.write("memory\n")
    return (JSON.parse(await line) as { memory: Memory }).memory
  }
  const state = async (): Promise<ServerState> => {
    const line = nextLine("the child's state")
    child.stdin!.write("state\n")
    return (JSON.parse(await line) as { state: ServerState }).state
  }
  /** Polls the server's own counts until `condition` holds: what it has read, held and paused, not how quiet the attackers' sockets look. */
  const until = async (condition: (state: ServerState) => boolean, what: string, timeoutMs = 60_000): Promise<ServerState> => {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const now = await state()
      if (condition(now)) return now
      if (performance.now() > deadline) throw new Error(`the server never reached ${what} within ${timeoutMs} ms: ${JSON.stringify(now)}`)
      await new Promise<void>((resolve) => setTimeout(resolve, 20))
    }
  }
  return { port: message.port, child, memory, until }
}

/** What the server child says of itself (meshServerChild.ts, "state"). */
export interface ServerState {
  readonly requests: number
  readonly bytes: number
  readonly channels: number
  readonly sharedFull: boolean
  readonly connections: number
  readonly paused: number
  readonly bytesRead: number
}

export interface Memory {
  readonly rss: number
  readonly heapUsed: number
  readonly arrayBuffers: number
}

/** The child's memory after a full collection, asked over IIP: a legitimate request that must be answered. */
export const memoryOf = async (client: IipClient): Promise<Memory> => JSON.parse((await client.call("/memory", "{}", { timeoutMs: 5000 })).toString()) as Memory

export const mb = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`

/** A mesh request packet: envelope of request `id`, no metadata, `body` (status 1 whole, 0 when more follow). */
export const meshRequest = (status: 0 | 1, path: string, channelId: number, id: number, body: Uint8Array): Buffer =>
  frame(status, path, channelId, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, body, 8192))

/** A continuation packet of a streamed request: chunk header 00 and `bytes`. */
export const meshChunk = (status: 2 | 3, path: string, channelId: number, bytes: Uint8Array): Buffer => frame(status, path, channelId, Buffer.concat([Buffer.of(0), bytes]))

/** A raw dialer in mesh mode: it said hello (with `hello`'s fields) and got the answer. */
export const meshDialer = async (port: number, cleanup: Cleanup, hello: Partial<Hello> = {}, localAddress?: string): Promise<RawClient> => {
  const raw = await RawClient.connect(port, cleanup, localAddress)
  raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "attacker", ...hello }), false)))
  const answer = await raw.next(5000)
  if (answer.path !== MeshPath.hello || !answer.data.toString("utf8").includes('"iipmesh"')) throw new Error(`no mesh hello answer: ${answer.data.toString("utf8")}`)
  return raw
}
