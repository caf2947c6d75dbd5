// The local directory source (src/discovery/directorySource.ts) against what other processes on
// the machine can put in the shared directory: the directory removed under it, a FIFO or a symlink
// named *.json, a huge file, announcements with fields out of range, an invalid file that stays.
// Each case keeps the good announcement beside it reported.
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { directorySource, MaxAnnouncementFiles } from "../../src/discovery/directorySource.ts"
import type { EndpointUpdate } from "../../src/discovery/types.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Recorder } from "./recorder.ts"

type Logged = { readonly event: string; readonly fields: Record<string, unknown> }

const good = { service: "pricing", host: "127.0.0.1", port: 4143, weight: 1, node: "good", mesh: "m", pid: process.pid }

describe("directorySource against hostile files", () => {
  const stops: Array<() => void> = []
  const dirs: Array<string> = []
  afterEach(() => {
    for (const stop of stops.splice(0)) stop()
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
  })
  const freshDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-hostile-"))
    dirs.push(dir)
    return dir
  }
  const start = (directory: string) => {
    const updates = new Recorder<EndpointUpdate>()
    const logs = new Recorder<Logged>()
    stops.push(directorySource({ directory, mesh: "m", rescanMs: 20, log: (event, fields) => logs.push({ event, fields }) }).start(updates.push))
    return { updates, logs }
  }
  const ports = (update: EndpointUpdate) => (update._tag === "Reset" ? update.endpoints.map((e) => e.port) : [])

  it("the directory removed under it is logged, not thrown from the rescan timer; once it is back it is read again", async () => {
    const dir = freshDir()
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    const { updates, logs } = start(dir)
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 2000 })
    rmSync(dir, { recursive: true, force: true })
    const failed = await logs.waitFor((l) => l.event === "discovery.directory-unreadable", { timeoutMs: 2000 })
    expect(failed.fields).toMatchObject({ directory: dir })
    expect(String(failed.fields["message"])).toContain("ENOENT")
    // The last set stays while the directory is unreadable; a new directory is read again.
    const mark = updates.mark
    mkdirSync(dir)
    writeFileSync(join(dir, "good.json"), JSON.stringify({ ...good, port: 4144 }))
    await updates.waitFor((u) => ports(u).includes(4144), { from: mark, timeoutMs: 2000 })
  })

  it("a symlink named *.json is not followed: nothing of its target reaches the log or the endpoints", async () => {
    const dir = freshDir()
    const secret = join(freshDir(), "secret")
    writeFileSync(secret, "root:s3cr3t-hash:19000:0:99999:7:::\n")
    symlinkSync(secret, join(dir, "shadow.json"))
    const elsewhere = join(freshDir(), "announcement")
    writeFileSync(elsewhere, JSON.stringify({ ...good, port: 4999, node: "linked" }))
    symlinkSync(elsewhere, join(dir, "linked.json"))
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    const { updates, logs } = start(dir)
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 2000 })
    await logs.waitFor((l) => l.event === "discovery.announcement-invalid" && String(l.fields["file"]).endsWith("shadow.json"), { timeoutMs: 2000 })
    await logs.waitFor((l) => l.event === "discovery.announcement-invalid" && String(l.fields["file"]).endsWith("linked.json"), { timeoutMs: 2000 })
    expect(JSON.stringify(logs.items)).not.toContain("s3cr3t")
    expect(updates.items.flatMap(ports)).not.toContain(4999)
  })

  it("a huge file is skipped by its size without being read", async () => {
    const dir = freshDir()
    const huge = join(dir, "huge.json")
    writeFileSync(huge, "")
    truncateSync(huge, 256 * 1024 * 1024) // sparse: no disk used
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    const { updates, logs } = start(dir)
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 2000 })
    const skipped = await logs.waitFor((l) => l.event === "discovery.announcement-invalid" && String(l.fields["file"]).endsWith("huge.json"), { timeoutMs: 2000 })
    expect(String(skipped.fields["message"])).toContain("larger than")
  })

  it("fields out of range are rejected, each with a message naming it: port, weight, pid, service, host, node", async () => {
    const dir = freshDir()
    const bad: Record<string, object> = {
      port0: { port: 0 },
      port70000: { port: 70000 },
      weightHuge: { weight: 1e300 },
      weight0: { weight: 0 },
      pid0: { pid: 0 },
      pidNegative: { pid: -1 },
      serviceNotLabel: { service: "Pricing\n{\"forged\":1}" },
      serviceLong: { service: "a".repeat(64) },
      hostGarbage: { host: "10.0.0.1:80/evil path" },
      nodeLong: { node: "n".repeat(300) }
    }
    for (const [name, fields] of Object.entries(bad)) writeFileSync(join(dir, `${name}.json`), JSON.stringify({ ...good, node: name, ...fields }))
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    const { updates, logs } = start(dir)
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 2000 })
    for (const name of Object.keys(bad)) {
      await logs.waitFor((l) => l.event === "discovery.announcement-invalid" && String(l.fields["file"]).endsWith(`${name}.json`), { timeoutMs: 2000 })
    }
    const reported = updates.items.flatMap((u) => (u._tag === "Reset" ? u.endpoints : []))
    expect(new Set(reported.map((e) => e.node))).toStrictEqual(new Set(["good"]))
  })

  it("an invalid file is logged once, not on every rescan, and again when it changes", async () => {
    const dir = freshDir()
    writeFileSync(join(dir, "broken.json"), "{ not json")
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    const { updates, logs } = start(dir)
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 2000 })
    // (A marker file caught half-written is logged too: only broken.json's lines count here.)
    const invalid = (l: Logged) => l.event === "discovery.announcement-invalid" && String(l.fields["file"]).endsWith("broken.json")
    await logs.waitFor(invalid, { timeoutMs: 2000 })
    // Several rescans (20 ms each) later: a marker file that appears shows they ran.
    writeFileSync(join(dir, "later.json"), JSON.stringify({ ...good, node: "later", port: 4145 }))
    await updates.waitFor((u) => ports(u).includes(4145), { timeoutMs: 2000 })
    const mark = updates.mark
    writeFileSync(join(dir, "later2.json"), JSON.stringify({ ...good, node: "later2", port: 4146 }))
    await updates.waitFor((u) => ports(u).includes(4146), { from: mark, timeoutMs: 2000 })
    expect(logs.items.filter(invalid)).toHaveLength(1)
    writeFileSync(join(dir, "broken.json"), "{ still not json, but longer")
    await logs.waitFor(invalid, { from: logs.items.indexOf(logs.items.find(invalid)!) + 1, timeoutMs: 2000 })
  })

  it("its own announcement is not written through a symlink another process put at its temporary name", () => {
    const dir = freshDir()
    const victim = join(freshDir(), "victim")
    writeFileSync(victim, "keep me")
    symlinkSync(victim, join(dir, "self.json.tmp"))
    stops.push(directorySource({ directory: dir, mesh: "m", announce: { service: "pricing", host: "127.0.0.1", port: 4143, weight: 1, node: "self" }, log: () => {} }).start(() => {}))
    expect(readFileSync(victim, "utf8")).toBe("keep me")
    expect(JSON.parse(readFileSync(join(dir, "self.json"), "utf8"))).toMatchObject({ node: "self", pid: process.pid })
  })

  it("more *.json files than MaxAnnouncementFiles: the first that many by name are read per scan, and that is logged once", async () => {
    const dir = freshDir()
    writeFileSync(join(dir, "a-good.json"), JSON.stringify(good))
    for (let i = 0; i < MaxAnnouncementFiles + 100; i++) writeFileSync(join(dir, `z-junk-${i}.json`), "{")
    const { updates, logs } = start(dir)
    const capped = await logs.waitFor((l) => l.event === "discovery.directory-capped", { timeoutMs: 5000 })
    expect(capped.fields).toMatchObject({ directory: dir, limit: MaxAnnouncementFiles, files: MaxAnnouncementFiles + 101 })
    await updates.waitFor((u) => ports(u).includes(4143), { timeoutMs: 5000 })
    // A later scan (it reads the marker, first by name) does not log the cap again.
    writeFileSync(join(dir, "a-marker.json"), JSON.stringify({ ...good, node: "marker", port: 4150 }))
    await updates.waitFor((u) => ports(u).includes(4150), { timeoutMs: 5000 })
    expect(logs.items.filter((l) => l.event === "discovery.directory-capped")).toHaveLength(1)
    expect(logs.items.filter((l) => l.event === "discovery.announcement-invalid").length).toBeLessThanOrEqual(MaxAnnouncementFiles)
  })

  it("its own announcement replaced by a directory: stopping logs it and does not throw", () => {
    const dir = freshDir()
    const logs: Array<string> = []
    const stop = directorySource({ directory: dir, mesh: "m", announce: { service: "pricing", host: "127.0.0.1", port: 4143, weight: 1, node: "self" }, log: (event) => logs.push(event) }).start(() => {})
    rmSync(join(dir, "self.json"))
    mkdirSync(join(dir, "self.json"))
    expect(() => stop()).not.toThrow()
    expect(logs).toContain("discovery.announcement-remove-failed")
  })

  it("a FIFO named *.json does not block the scan (in a child process, bounded)", async () => {
    const dir = freshDir()
    const made = spawnSync("mkfifo", [join(dir, "fifo.json")])
    expect(made.status, String(made.stderr)).toBe(0)
    writeFileSync(join(dir, "good.json"), JSON.stringify(good))
    // The scan is synchronous: a blocked open would block the test's own process, so a child runs it.
    const source = resolve(import.meta.dirname, "../../src/discovery/directorySource.ts")
    const script = `
      import { directorySource } from ${JSON.stringify(source)}
      const stop = directorySource({ directory: ${JSON.stringify(dir)}, mesh: "m", rescanMs: 60000, log: (event, fields) => console.log(JSON.stringify({ event, fields })) })
        .start((update) => console.log(JSON.stringify({ update })))
      stop()
      console.log(JSON.stringify({ done: true }))
    `
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    const exited = await new Promise<boolean>((done) => {
      const timer = setTimeout(() => done(false), CHILD_START_MS)
      child.on("exit", () => {
        clearTimeout(timer)
        done(true)
      })
    })
    if (!exited) child.kill("SIGKILL")
    expect(exited, `the scan blocked on the FIFO; output: ${out}`).toBe(true)
    expect(out).toContain('"done":true')
    expect(out).toContain('"port":4143')
    expect(out).toMatch(/announcement-invalid.*fifo\.json/)
  }, holdsStarts(1, 5000))
})
