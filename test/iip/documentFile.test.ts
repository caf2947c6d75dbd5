// A configuration document kept current from its file (src/iip/documentFile.ts): a read that
// raced a writer (the file changed while it was read) may hold part of the file, and YAML cut
// short is often still a valid document; such a read is not applied, the next check reads it whole.
import * as Result from "effect/Result"
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"
import { watchDocumentFile } from "../../src/iip/documentFile.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const dir = mkdtempSync(join(tmpdir(), "iip-mesh-document-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("watchDocumentFile", () => {
  it("a version that changed while it was read is not applied; the check looks again and applies the whole file", async () => {
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
      unsettled: (message) => ({ message }),
      event: "doc",
      pollMs: 3_600_000,
      // The settle time's own logic: half-written-files.test.ts.
      settleMs: 0,
      watch: false,
      log: (event, fields) => events.push(`${event} ${String(fields?.["applies"] ?? fields?.["keeping"] ?? "")}`)
    })
    if (Result.isFailure(watch)) throw new Error(watch.failure.message)
    try {
      writeFileSync(path, "part")
      duringRead = () => writeFileSync(path, "part and the rest")
      await watch.success.check()
      expect(watch.success.current()).toBe("part and the rest")
      expect(events).toStrictEqual(["doc-loaded first", "doc-changed ", "doc-loaded part and the rest"])
    } finally {
      watch.success.close()
    }
  })

  it("the start waits out its settle time on its own: a process with nothing else running does not exit before the file is read", async () => {
    const path = join(dir, "fresh.yaml")
    writeFileSync(path, "a: 1\n")
    // An mtime an hour ahead (a writer's clock ahead of ours): the start waits out the settle time.
    const ahead = Date.now() / 1000 + 3600
    utimesSync(path, ahead, ahead)
    const script = [
      `import * as Result from "effect/Result"`,
      `import { watchDocumentFile } from ${JSON.stringify(new URL("../../src/iip/documentFile.ts", import.meta.url).href)}`,
      `const watched = await watchDocumentFile({ path: ${JSON.stringify(path)}, read: async () => Result.succeed("read"), describe: String,`,
      `  unsettled: (message) => ({ message }), event: "doc", pollMs: 3600000, watch: false, log: () => {} })`,
      `if (Result.isSuccess(watched)) watched.success.close()`,
      `console.log(Result.isSuccess(watched) ? watched.success.current() : "failed")`
    ].join("\n")
    const child = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { cwd: new URL("../..", import.meta.url).pathname, timeout: CHILD_START_MS }).then(
      ({ stdout }) => ({ code: 0, stdout }),
      (error: { code?: number; stdout?: string }) => ({ code: error.code, stdout: error.stdout })
    )
    expect(child).toStrictEqual({ code: 0, stdout: "read\n" })
  }, holdsStarts(1, 5000))
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

  it("YAML of more than 20,000 tokens is refused before the parser runs, naming the bound: within 256 KiB the parser took seconds", async () => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const path = join(dir, "routes.yaml")
    writeFileSync(path, "routes: []")
    await readDocumentFile(path, 1024, "routes file") // the parser loaded, so the first file's time is its own
    const hostile: Record<string, string> = {
      // Before, in yaml.parse at load 17: 4.6 s, 3.9 s and 2.2 s of the event loop (within 1 MiB: 250,000 quoted items took 10.5 s).
      "65,000 quoted items": `routes: [${'"x",'.repeat(65_000)}]`,
      "87,000 sequence entries": `routes:\n${"- \n".repeat(87_000)}`,
      "262,000 blank lines": `routes: []${"\n".repeat(262_000)}`
    }
    for (const [shape, text] of Object.entries(hostile)) {
      writeFileSync(path, text)
      // The main thread's CPU time, not wall time (more than a second beside other test workers at
      // load 15+) nor the process's (V8's helper threads add to it under load: 200-240 ms seen at
      // load 7-13): the refusal took 60-90 ms of CPU, yaml.parse of each text 360-500 ms (load 14).
      const started = process.threadCpuUsage()
      const result = await readDocumentFile(path, 1024 * 1024, "routes file")
      const used = process.threadCpuUsage(started)
      expect((used.user + used.system) / 1000, shape).toBeLessThan(200)
      expect(Result.isFailure(result) ? result.failure : "parsed", shape).toBe("cannot parse it as YAML: more than the 20000 YAML tokens a routes file may hold")
    }
    // A document at the bound is read.
    writeFileSync(path, `routes:\n${"- \n".repeat(6_600)}`)
    const atBound = await readDocumentFile(path, 1024 * 1024, "routes file")
    expect(Result.isSuccess(atBound) && (atBound.success as { routes: Array<unknown> }).routes.length).toBe(6_600)
  })

  it("YAML of more than 256 KiB is refused: a 1 MiB block or folded scalar costs the parser a few hundred ms per read", async () => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const path = join(dir, "routes.yaml")
    // Few tokens, so the token bound passes them; 180-270 ms of CPU each in yaml.parse at load 15.
    for (const text of [`routes: []\nnote: |\n${"  x\n".repeat(262_000)}`, `routes: []\nnote: >\n${"  x\n\n".repeat(200_000)}`]) {
      writeFileSync(path, text)
      const result = await readDocumentFile(path, 1024 * 1024, "routes file")
      expect(Result.isFailure(result) ? result.failure : "parsed").toBe("cannot parse it as YAML: more than the 262144 characters a routes file may hold as YAML")
    }
    writeFileSync(path, `routes: []\nnote: |\n${"  x\n".repeat(65_000)}`)
    expect(Result.isSuccess(await readDocumentFile(path, 1024 * 1024, "routes file"))).toBe(true)
  })

  it("a mapping of 6,500 long keys within the bounds is read in linear time; a key twice in one mapping is still refused", async () => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const path = join(dir, "policy.yaml")
    writeFileSync(path, "a: 1")
    await readDocumentFile(path, 1024, "policy file") // the parser loaded
    // yaml's own check compares each key with every earlier one: 21 million comparisons of 34 equal
    // characters and more, 1.3 s of CPU in yaml.parse at load 15 (0.1-0.25 s without the check).
    const keys = Array.from({ length: 6_500 }, (_, i) => `${"/".repeat(34)}${String(i).padStart(4, "0")}`)
    writeFileSync(path, `{${keys.join(",")}}`)
    const started = process.cpuUsage()
    const read = await readDocumentFile(path, 1024 * 1024, "policy file")
    const used = process.cpuUsage(started)
    expect(Result.isSuccess(read) && Object.keys(read.success as object).length).toBe(6_500)
    expect((used.user + used.system) / 1000).toBeLessThan(700)
    const cases: ReadonlyArray<readonly [string, string | undefined]> = [
      [`${keys.slice(0, 100).join(":\n")}:\n${keys[42]}: 1`, `cannot parse it as YAML: "${"/".repeat(34)}0042" twice in one mapping`],
      ["a: {b: 1, 'b': 2}", `cannot parse it as YAML: "b" twice in one mapping`],
      ["- {b: 1}\n- {b: 2}\n- c: {b: 3}\n  b: 4", undefined],
      ["1: x\n'1': y\ntrue: z\n'true': w", undefined]
    ]
    for (const [text, refusal] of cases) {
      writeFileSync(path, text)
      const result = await readDocumentFile(path, 1024 * 1024, "policy file")
      expect(Result.isFailure(result) ? result.failure : "parsed", text.slice(-40)).toBe(refusal ?? "parsed")
    }
  })
})

describe("YAML shapes", () => {
  /** `text` read as a YAML routes file, the parser loaded beforehand (so the time is the file's own). */
  const readYaml = async (text: string) => {
    const { readDocumentFile } = await import("../../src/iip/documentFile.ts")
    const path = join(dir, "shape.yaml")
    writeFileSync(path, "a: 1")
    await readDocumentFile(path, 1024, "routes file")
    writeFileSync(path, text)
    return readDocumentFile(path, 1024 * 1024, "routes file")
  }

  it("a key that is a mapping, a sequence or an alias is refused: 300 nested `? ` keys (601 bytes) held yaml's toJS 16.5 s", async () => {
    // Before, each parsed: toJS turns a collection key into a string, each level anew (90 levels:
    // ~40 ms, 200: 0.34 s, 300: 16.5 s of CPU at load 9; past 100 levels the nesting bound refuses
    // them now). An alias key passed yaml's duplicate check and took the value of the key it names;
    // the !!omap one hid a duplicate from the one-pass check.
    const hostile = ["? ".repeat(90) + "x", "? [a]\n: 1", "{[a]: 1}", "? {a: 1}\n: 2", "&k a: 1\n*k : 2", "%YAML 1.1\n---\n!!omap [{a: 1, a: 2}: x]"]
    for (const text of hostile) {
      const started = process.cpuUsage()
      const result = await readYaml(text)
      const used = process.cpuUsage(started)
      expect((used.user + used.system) / 1000, text.slice(0, 20)).toBeLessThan(500)
      expect(Result.isFailure(result) ? result.failure : "parsed", text.slice(0, 20)).toMatch(/^cannot parse it as YAML: (a mapping key that is not a scalar|"a" twice in one mapping)/)
    }
    // Scalar keys of every style still read.
    const read = await readYaml("a: 1\n'b': 2\n\"c\": 3\n? d\n: 4\n5: e")
    expect(Result.isSuccess(read) ? read.success : read.failure).toEqual({ a: 1, b: 2, c: 3, d: 4, 5: "e" })
  })

  it("block collections nested deeper than 100 are refused naming the bound, as flow ones are", async () => {
    // Before, yaml's composer recursed until the stack gave out and said "Maximum call stack size
    // exceeded" (1,000 levels of `- `, 2,001 bytes, from here), at a depth set by the caller's stack.
    const hostile = ["- ".repeat(101) + "x", "- ".repeat(1_000) + "x", "? ".repeat(1_000) + "x", "a:\n" + "- ".repeat(1_000) + "x", "- ".repeat(60) + "[".repeat(60) + "]".repeat(60)]
    for (const text of hostile) {
      const result = await readYaml(text)
      expect(Result.isFailure(result) ? result.failure : "parsed", text.slice(0, 20)).toBe("cannot parse it as YAML: collections nested deeper than 100")
    }
    // At the bound, whatever the innermost collection holds.
    const read = await readYaml("- ".repeat(100) + "x")
    expect(JSON.stringify(Result.isSuccess(read) ? read.success : read.failure)).toBe("[".repeat(100) + '"x"' + "]".repeat(100))
    expect(Result.isSuccess(await readYaml("{a: ".repeat(100) + "x" + "}".repeat(100)))).toBe(true)
  })
})
