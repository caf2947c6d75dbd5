// Static sources (src/discovery/staticSource.ts): the configuration's endpoints, and a real JSON file
// in a temp directory that the test rewrites, replaces, breaks and deletes while a Discovery watches;
// each step waits (bounded) for the update or log event it causes.
import * as Result from "effect/Result"
import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import type { MergedEndpoint } from "../../src/discovery/endpointSet.ts"
import { configSource, fileSource, parseAddress, readEndpointFile } from "../../src/discovery/staticSource.ts"
import { endpointKey, type EndpointUpdate } from "../../src/discovery/types.ts"
import { Recorder } from "./recorder.ts"

const root = mkdtempSync(join(tmpdir(), "iip-mesh-static-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

let discovery = new Discovery()
afterEach(() => discovery.close())

const keys = (service: string) => discovery.endpoints(service).map((e) => `${endpointKey(e)}#${e.weight}`)

describe("parseAddress", () => {
  it("splits host:port and [v6]:port; rejects the rest", () => {
    expect(parseAddress("10.0.0.1:4143")).toStrictEqual({ host: "10.0.0.1", port: 4143 })
    expect(parseAddress("web.shop.svc:80")).toStrictEqual({ host: "web.shop.svc", port: 80 })
    expect(parseAddress("[fd00::1]:443")).toStrictEqual({ host: "fd00::1", port: 443 })
    for (const bad of ["10.0.0.1", "10.0.0.1:", ":80", "fd00::1:443", "host:65536", "a b:1", "host:80x"]) expect(parseAddress(bad), bad).toBeUndefined()
  })
})

describe("configSource", () => {
  it("reports each configured service at once, as source static", () => {
    discovery = new Discovery()
    discovery.register(configSource({ web: [{ address: "10.0.0.1:80", weight: 2 }, { address: "[fd00::1]:80", weight: 1 }], api: [{ address: "api.local:90", weight: 1 }] }))
    expect(discovery.endpoints("web")).toStrictEqual([
      { service: "web", host: "10.0.0.1", port: 80, weight: 2, features: [], source: "static", sources: ["static"] },
      { service: "web", host: "fd00::1", port: 80, weight: 1, features: [], source: "static", sources: ["static"] }
    ])
    expect(keys("api")).toStrictEqual(["api.local:90#1"])
  })
})

describe("readEndpointFile", () => {
  it("reads the configuration's endpoints shape and names what is wrong otherwise", () => {
    const file = join(root, "read.json")
    writeFileSync(file, JSON.stringify({ web: [{ address: "10.0.0.1:80", weight: 3 }] }))
    expect(readEndpointFile(file)).toStrictEqual(Result.succeed({ web: [{ address: "10.0.0.1:80", weight: 3 }] }))
    const secured = { web: [{ address: "10.0.0.1:80", weight: 1, identity: "spiffe://iip-mesh.local/svc/web" }], go: [{ address: "10.0.0.2:9000", weight: 1, security: "tls", ca: "/ca.pem" }] }
    writeFileSync(file, JSON.stringify(secured))
    expect(readEndpointFile(file)).toStrictEqual(Result.succeed(secured))
    const cases: Array<[string, string]> = [
      ["{ not json", "JSON"],
      [JSON.stringify({ web: [{ address: "10.0.0.1", weight: 1 }] }), "HOST:PORT"],
      [JSON.stringify({ web: [{ address: "10.0.0.1:80", weight: 0 }] }), "weight"],
      [JSON.stringify({ Web_1: [] }), "DNS label"],
      [JSON.stringify([]), ""],
      [JSON.stringify({ web: [{ address: "10.0.0.1:80", weight: 1, identity: "web" }] }), "SPIFFE ID"],
      [JSON.stringify({ web: [{ address: "10.0.0.1:80", weight: 1, security: "ssl" }] }), "security"]
    ]
    for (const [text, expected] of cases) {
      writeFileSync(file, text)
      const result = readEndpointFile(file)
      if (Result.isSuccess(result)) throw new Error(`expected ${text} to be rejected`)
      expect(result.failure._tag).toBe("StaticFileInvalid")
      expect(result.failure.path).toBe(file)
      expect(result.failure.message).toContain(expected)
    }
    const missing = readEndpointFile(join(root, "nope.json"))
    expect(Result.isFailure(missing) && missing.failure.message).toContain("ENOENT")
  })
})

describe("fileSource", () => {
  let dir: string
  let file: string
  let updates: Recorder<EndpointUpdate<MergedEndpoint>>
  let log: Recorder<[string, Record<string, unknown>]>

  beforeEach(() => {
    dir = mkdtempSync(join(root, "watch-"))
    file = join(dir, "endpoints.json")
    updates = new Recorder()
    log = new Recorder()
    discovery = new Discovery()
  })

  const write = (path: string, value: unknown) => writeFileSync(path, typeof value === "string" ? value : JSON.stringify(value))
  const start = () => {
    discovery.register(fileSource({ path: file, debounceMs: 10, log: (event, fields) => log.push([event, fields]) }))
    discovery.subscribe("*", updates.push)
  }
  const removed = (key: string) => (u: EndpointUpdate<MergedEndpoint>) => u._tag === "Remove" && u.key === key
  const added = (key: string) => (u: EndpointUpdate<MergedEndpoint>) => u._tag === "Add" && endpointKey(u.endpoint) === key
  const changed = (key: string) => (u: EndpointUpdate<MergedEndpoint>) => u._tag === "Change" && endpointKey(u.endpoint) === key

  it("reads the file at start and again when it changes", async () => {
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }, { address: "10.0.0.2:80", weight: 1 }] })
    start()
    expect(keys("web")).toStrictEqual(["10.0.0.1:80#1", "10.0.0.2:80#1"])
    expect(discovery.endpoints("web")[0]!.sources).toStrictEqual(["static:file"])

    const mark = updates.mark
    write(file, { web: [{ address: "10.0.0.2:80", weight: 5 }, { address: "10.0.0.3:80", weight: 1 }] })
    await updates.waitFor(added("10.0.0.3:80"), { from: mark })
    expect(updates.items.slice(mark).map((u) => u._tag)).toStrictEqual(["Remove", "Change", "Add"])
    expect(keys("web")).toStrictEqual(["10.0.0.2:80#5", "10.0.0.3:80#1"])
  })

  it("a file replaced by rename (an editor's save) is seen, and a service left out of it is removed", async () => {
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }], api: [{ address: "10.0.0.9:90", weight: 1 }] })
    start()
    const next = join(dir, ".endpoints.json.tmp")
    write(next, { web: [{ address: "10.0.0.1:80", weight: 4 }] })
    renameSync(next, file)
    await updates.waitFor(removed("10.0.0.9:90"))
    await updates.waitFor(changed("10.0.0.1:80"))
    expect(discovery.snapshot().services).toStrictEqual({ web: [expect.objectContaining({ address: "10.0.0.1:80", weight: 4 })] })
  })

  it("a malformed file keeps the last good set and is reported; the next good file is used", async () => {
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }] })
    start()
    const mark = updates.mark
    write(file, '{ "web": [ { "address": "10.0.0.1:80", ')
    const [, fields] = await log.waitFor(([event]) => event === "discovery.static-file-invalid")
    expect(fields).toMatchObject({ path: file })
    expect(String(fields["message"])).toContain("JSON")
    write(file, { web: [{ address: "10.0.0.5", weight: 1 }] })
    await log.waitFor(([event, f]) => event === "discovery.static-file-invalid" && String(f["message"]).includes("HOST:PORT"))
    expect(updates.items.length).toBe(mark)
    expect(keys("web")).toStrictEqual(["10.0.0.1:80#1"])

    write(file, { web: [{ address: "10.0.0.5:80", weight: 1 }] })
    await updates.waitFor(added("10.0.0.5:80"), { from: mark })
    expect(keys("web")).toStrictEqual(["10.0.0.5:80#1"])
  })

  it("a file that appears after start is read; one that is deleted takes its endpoints with it", async () => {
    start()
    await log.waitFor(([event]) => event === "discovery.static-file-missing")
    expect(discovery.snapshot().services).toStrictEqual({})
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }] })
    await updates.waitFor(added("10.0.0.1:80"))
    unlinkSync(file)
    await updates.waitFor(removed("10.0.0.1:80"))
    expect(discovery.endpoints("web")).toStrictEqual([])
  })

  it("changes elsewhere in the directory do not re-report the file; the config and the file merge", async () => {
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }] })
    discovery.register(configSource({ web: [{ address: "10.0.0.1:80", weight: 7 }] }))
    start()
    expect(discovery.endpoints("web")).toMatchObject([{ weight: 7, source: "static", sources: ["static", "static:file"] }])
    write(join(dir, "other.json"), "unrelated")
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }, { address: "10.0.0.2:80", weight: 1 }] })
    await updates.waitFor(added("10.0.0.2:80"))
    expect(updates.items.map((u) => u._tag)).toStrictEqual(["Reset", "Add"])
    expect(log.items).toStrictEqual([])
  })

  it("after stop, changes to the file are not read", async () => {
    write(file, { web: [{ address: "10.0.0.1:80", weight: 1 }] })
    const options = { path: file, debounceMs: 10, log: () => {} }
    const emitted = new Recorder<EndpointUpdate>()
    fileSource(options).start(emitted.push)()
    // A second watcher on the same directory tells when the change has been seen and debounced.
    const witness = new Recorder<EndpointUpdate>()
    const stopWitness = fileSource(options).start(witness.push)
    write(file, { web: [{ address: "10.0.0.2:80", weight: 1 }] })
    await witness.waitFor((u) => u._tag === "Reset" && u.endpoints[0]?.host === "10.0.0.2")
    stopWitness()
    expect(emitted.items).toMatchObject([{ _tag: "Reset", service: "web", endpoints: [{ host: "10.0.0.1" }] }])
  })
})
