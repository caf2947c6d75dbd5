// A configuration document kept current from its file (src/iip/documentFile.ts): a read that
// raced a writer (the file changed while it was read) may hold part of the file, and YAML cut
// short is often still a valid document; such a read is not applied, the next check reads it whole.
import * as Result from "effect/Result"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { watchDocumentFile } from "../../src/iip/documentFile.ts"

const dir = mkdtempSync(join(tmpdir(), "iip-mesh-document-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("watchDocumentFile", () => {
  it("a version that changed while it was read is not applied; the next check applies the whole file", async () => {
    const path = join(dir, "routes.yaml")
    writeFileSync(path, "first")
    /** Set by the test: runs inside the next read, after the content was taken (a writer finishing meanwhile). */
    let duringRead: (() => void) | undefined
    const events: Array<string> = []
    const watch = await watchDocumentFile<string, { readonly message: string }>({
      path,
      read: async () => {
        const text = readFileSync(path, "utf8")
        duringRead?.()
        duringRead = undefined
        return Result.succeed(text)
      },
      describe: (text) => text,
      event: "doc",
      pollMs: 3_600_000,
      watch: false,
      log: (event, fields) => events.push(`${event} ${String(fields?.["applies"] ?? fields?.["keeping"] ?? "")}`)
    })
    if (Result.isFailure(watch)) throw new Error(watch.failure.message)
    try {
      writeFileSync(path, "part")
      duringRead = () => writeFileSync(path, "part and the rest")
      await watch.success.check()
      expect(watch.success.current()).toBe("first")
      await watch.success.check()
      expect(watch.success.current()).toBe("part and the rest")
      expect(events).toStrictEqual(["doc-loaded first", "doc-loaded part and the rest"])
    } finally {
      watch.success.close()
    }
  })
})

describe("readDocumentFile", () => {
  it("JSON with a key twice in one object is refused, as YAML is (JSON.parse keeps the last silently)", async () => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const cases: ReadonlyArray<readonly [string, string | undefined]> = [
      [`{"routes": [], "routes": [{"name": "x"}]}`, `"routes" twice in one object`],
      [`{"a": {"b": 1, "c": [{"d": 1, "\\u0064": 2}]}}`, `"d" twice in one object`],
      [`{"a": {"b": 1}, "c": {"b": 2}, "d": [{"e": 1}, {"e": 2}], "s": "\\"a\\": {"}`, undefined]
    ]
    for (const [text, duplicate] of cases) {
      const path = join(dir, "doc.json")
      writeFileSync(path, text)
      const result = await readDocumentFile(path, 1024, "document")
      expect(Result.isFailure(result) ? result.failure : "parsed", text).toBe(duplicate === undefined ? "parsed" : `cannot parse it as JSON: ${duplicate}`)
    }
  })

  it("YAML of more than 20,000 tokens is refused before the parser runs, naming the bound: within 1 MiB the parser took seconds", async () => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const path = join(dir, "routes.yaml")
    const hostile: Record<string, string> = {
      // Before: 10.5 s, 5.8 s and about 1 s of the event loop (yaml.parse: a CST, nodes and JS values per token).
      "250,000 quoted items": `routes: [${'"x",'.repeat(250_000)}]`,
      "300,000 sequence entries": `routes:\n${"- \n".repeat(300_000)}`,
      "a million blank lines": `routes: []${"\n".repeat(1_000_000)}`
    }
    for (const [shape, text] of Object.entries(hostile)) {
      writeFileSync(path, text)
      const started = performance.now()
      const result = await readDocumentFile(path, 1024 * 1024, "routes file")
      expect(performance.now() - started, shape).toBeLessThan(1_000)
      expect(Result.isFailure(result) ? result.failure : "parsed", shape).toBe("cannot parse it as YAML: more than the 20000 YAML tokens a routes file may hold")
    }
    // A document at the bound is read.
    writeFileSync(path, `routes:\n${"- \n".repeat(6_600)}`)
    const atBound = await readDocumentFile(path, 1024 * 1024, "routes file")
    expect(Result.isSuccess(atBound) && (atBound.success as { routes: Array<unknown> }).routes.length).toBe(6_600)
  })
})
