// A process whose only work is a Kubernetes watch (test/support/kubeWatchChild.ts): the watch's
// delays (restart backoff, relist backoff, the client's reconnect delay, the watch spacing) are the
// only thing pending while it waits, so they must hold the process up until the watch is stopped.
// Unref'd, the process ended (exit 0) in the first backoff and never watched again.
import { spawn } from "node:child_process"
import { resolve } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { FakeKubeApi } from "./fakeKubeApi.ts"

const child = resolve(import.meta.dirname, "../support/kubeWatchChild.ts")
const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

describe("a process whose only work is a Kubernetes watch", () => {
  it("stays up through the backoff after a failed watch and lists again; a stop then lets it exit by itself", async () => {
    const api = await FakeKubeApi.start("shop")
    cleanups.push(() => api.close())
    api.failWatches = 1
    const watcher = spawn(process.execPath, [child, String(api.port)], { stdio: ["ignore", "pipe", "inherit"] })
    const exited = new Promise<number | null>((done) => watcher.once("exit", (code) => done(code)))
    cleanups.push(() => watcher.exitCode === null && watcher.signalCode === null && watcher.kill("SIGKILL"))
    let out = ""
    watcher.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    // The child's start (loading @kubernetes/client-node) alone took 7 s of the 10 s this once allowed at a load of 20.
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: CHILD_START_MS })
    // Before: the 100 ms restart delay held nothing, and the process exited before the second list.
    const second = api.requests.waitFor((r) => r.kind === "list", { from: 1, timeoutMs: 10_000 }).then(() => "listed again", () => "no second list")
    expect(await Promise.race([second, exited.then((code) => `exited ${code} in the backoff`)])).toBe("listed again")
    expect(out).toContain('"event":"failed"')
    // Watching again: stopped, nothing of the watch is left to hold it.
    await api.requests.waitFor((r) => r.kind === "watch", { from: 2, timeoutMs: 10_000 })
    watcher.kill("SIGTERM")
    expect(await exited).toBe(0)
  }, holdsStarts(1, 30_000))
})
