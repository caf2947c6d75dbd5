// `ca rotate` dying midway, then run again. The crash is injected where the disk sees it: every
// file the CA directory code writes lands by a rename (a temporary file renamed into place, or a
// file moved), so the k-th rename completing and then throwing leaves the directory exactly as a
// process killed right after its k-th write. For every k until rotate runs through: the issuer
// still loads the directory meanwhile (its intermediate and bundle untouched), the other steps do
// not make it worse, and rotate run again finishes the rotation (or, once it had finished, says
// so and names the next step).
import { createPrivateKey, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it, vi } from "vitest"
import { caFiles, finishRotation, initCa, loadIssuingCa, renewIntermediate, rotateCa, switchIntermediate } from "../../src/identity/caDirectory.ts"
import { certificatesOfPem, chainProblem } from "../../src/identity/trustBundle.ts"

/** The rename after which the next one throws (0: none does); the temporary file written before which the next one throws. */
const crash = vi.hoisted(() => ({ after: 0, renames: 0, beforeRename: 0, temporaries: 0 }))
vi.mock("node:fs", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs")>()
  const renameSync: typeof actual.renameSync = (from, to) => {
    actual.renameSync(from, to)
    if (crash.after !== 0 && ++crash.renames === crash.after) throw new Error(`injected crash after write ${crash.after}`)
  }
  const writeFileSync: typeof actual.writeFileSync = (file, data, options) => {
    actual.writeFileSync(file, data, options)
    if (crash.beforeRename !== 0 && String(file).endsWith(".tmp") && ++crash.temporaries === crash.beforeRename) {
      throw new Error(`injected crash before rename ${crash.beforeRename}`)
    }
  }
  return { ...actual, default: { ...actual, renameSync, writeFileSync }, renameSync, writeFileSync }
})

const work = fs.mkdtempSync(join(tmpdir(), "iip-mesh-ca-crash-"))
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

const read = (dir: string, name: string) => fs.readFileSync(join(dir, name), "utf8")
/** Whether `dir/key` is the private key of `dir/certificate`. */
const keyOf = (dir: string, key: string, certificate: string) =>
  fs.existsSync(join(dir, key)) && new X509Certificate(read(dir, certificate)).checkPrivateKey(createPrivateKey(read(dir, key)))
let copies = 0
/** `step` run on a copy of `dir`: its error message, if it threw; the issuer must still load the copy. */
const onCopy = async (dir: string, step: (dir: string) => unknown): Promise<string | undefined> => {
  const copy = join(work, `copy-${++copies}`)
  fs.cpSync(dir, copy, { recursive: true })
  const failed = await Promise.resolve().then(() => step(copy)).then(() => undefined, (error: Error) => error.message)
  expect(() => loadIssuingCa(copy), `after ${String(step)}: ${failed}`).not.toThrow()
  return failed
}

describe("ca rotate interrupted after each of its writes, then run again", () => {
  it("the issuer keeps loading the directory throughout; the rerun finishes the rotation, which then switches and finishes", async () => {
    const pristine = join(work, "pristine")
    await initCa({ dir: pristine, trustDomain: "shop.example" })
    const oldRoot = read(pristine, caFiles.root)
    const inService = read(pristine, caFiles.intermediate)
    const outcomes: Array<[number, string | undefined, string]> = []
    for (let k = 1; ; k++) {
      const dir = join(work, `crash-${k}`)
      fs.cpSync(pristine, dir, { recursive: true })
      crash.after = k
      crash.renames = 0
      const first = await rotateCa({ dir }).then(() => "ran through", (error: Error) => error.message)
      crash.after = 0
      if (first === "ran through") {
        // Every write was interrupted once: the rotation has at least its seven files to write.
        expect(k).toBeGreaterThan(7)
        break
      }
      expect(first, `write ${k}`).toBe(`injected crash after write ${k}`)
      // What an issuer re-reading the directory sees: still the intermediate in service, under a root of its bundle.
      expect(loadIssuingCa(dir).intermediate.certificatePem, `write ${k}`).toBe(inService)
      // No other step run on the stopped rotation leaves the issuer a CA it refuses; each that
      // refuses where rotate made the previous root names what finishes it.
      const torn = fs.existsSync(join(dir, caFiles.previousRoot)) && certificatesOfPem(read(dir, caFiles.bundle)).length === 1
      for (const step of [finishRotation, switchIntermediate, renewIntermediate]) {
        const refused = await onCopy(dir, (copy) => step({ dir: copy }))
        if (torn) expect(String(refused), `${step.name} after write ${k}`).toMatch(/stopped midway.*run ca rotate again/)
      }
      const bundleHadBoth = certificatesOfPem(read(dir, caFiles.bundle)).length === 2

      const midway = fs.existsSync(join(dir, caFiles.previousRoot))
      let outcome: string | undefined
      const again = await rotateCa({ dir }).then((ran) => {
        outcome = ran
        return "finished"
      }, (error: Error) => error.message)
      if (bundleHadBoth) {
        // The crash came after the last write: the rotation is whole, and the rerun names what comes next.
        expect(again, `write ${k}`).toMatch(/a rotation is in progress .*ca switch-intermediate/)
      } else {
        expect(again, `write ${k}`).toBe("finished")
        // What `ca rotate` reports: it took the rotation up where it stopped, or (no previous root yet) began it again.
        outcomes.push([k, outcome, midway ? "resumed" : "started"])
      }
      // The directory as a rotation that never stopped leaves it.
      expect(read(dir, caFiles.previousRoot), `write ${k}`).toBe(oldRoot)
      expect(keyOf(dir, caFiles.previousRootKey, caFiles.previousRoot), `write ${k}`).toBe(true)
      expect(keyOf(dir, caFiles.rootKey, caFiles.root), `write ${k}`).toBe(true)
      expect(keyOf(dir, caFiles.nextIntermediateKey, caFiles.nextIntermediate), `write ${k}`).toBe(true)
      expect(certificatesOfPem(read(dir, caFiles.bundle)), `write ${k}`).toStrictEqual([read(dir, caFiles.root), oldRoot])
      expect(chainProblem(read(dir, caFiles.nextIntermediate), read(dir, caFiles.root), new Date()), `write ${k}`).toBeUndefined()
      expect(loadIssuingCa(dir).intermediate.certificatePem, `write ${k}`).toBe(inService)
      switchIntermediate({ dir })
      expect(chainProblem(read(dir, caFiles.intermediate), read(dir, caFiles.root), new Date()), `write ${k}`).toBeUndefined()
      finishRotation({ dir })
      expect(certificatesOfPem(read(dir, caFiles.bundle))).toStrictEqual([read(dir, caFiles.root)])
      expect(loadIssuingCa(dir).trustDomain).toBe("shop.example")
    }
    expect(outcomes.map(([k, outcome]) => [k, outcome])).toStrictEqual(outcomes.map(([k, , expected]) => [k, expected]))
  })

  it("a crash between a file's write and its rename (its temporary file left, the rerun of the same process id: a container's pid 1) is finished by the rerun too", async () => {
    const pristine = join(work, "pristine-temporary")
    await initCa({ dir: pristine, trustDomain: "shop.example" })
    const oldRoot = read(pristine, caFiles.root)
    for (let k = 1; k <= 7; k++) {
      const dir = join(work, `crash-before-rename-${k}`)
      fs.cpSync(pristine, dir, { recursive: true })
      crash.beforeRename = k
      crash.temporaries = 0
      const first = await rotateCa({ dir }).then(() => "ran through", (error: Error) => error.message)
      crash.beforeRename = 0
      expect(first, `write ${k}`).toBe(`injected crash before rename ${k}`)
      // Before, the rerun's write of that same temporary file (flag wx) failed EEXIST, at every rerun.
      expect(await rotateCa({ dir }).then(() => "finished", (error: Error) => error.message), `write ${k}`).toBe("finished")
      expect(certificatesOfPem(read(dir, caFiles.bundle)), `write ${k}`).toStrictEqual([read(dir, caFiles.root), oldRoot])
      expect(fs.readdirSync(dir).filter((name) => name.endsWith(".tmp")), `write ${k}`).toStrictEqual([])
    }
  })
})
