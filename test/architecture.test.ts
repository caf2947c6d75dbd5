// Pins the layering: a module may import only from its own layer or the layers below it
// (protocol < mux < h2 < iip < files < balancer < toolkit < effect < identity < config < discovery < telemetry < sidecar < admin < cli). A change that reaches upwards fails here before it tangles the code.
import { readdirSync, readFileSync } from "node:fs"
import { join, relative, resolve } from "node:path"
import { describe, expect, it } from "vitest"

const layers = ["protocol", "mux", "h2", "iip", "files", "balancer", "toolkit", "effect", "identity", "config", "discovery", "telemetry", "sidecar", "admin", "cli"]
const srcRoot = resolve(import.meta.dirname, "../src")

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : []
  )

const layerOf = (file: string): number => layers.indexOf(relative(srcRoot, file).split("/")[0]!)

describe("layering", () => {
  it("every source file belongs to a known layer", () => {
    for (const file of sourceFiles(srcRoot)) expect(layerOf(file), relative(srcRoot, file)).toBeGreaterThanOrEqual(0)
  })

  it("no module imports from a higher layer", () => {
    const upward: Array<string> = []
    for (const file of sourceFiles(srcRoot)) {
      const text = readFileSync(file, "utf8")
      for (const match of text.matchAll(/from\s+"(\.[^"]+)"/g)) {
        const target = resolve(file, "..", match[1]!)
        if (layerOf(target) > layerOf(file)) upward.push(`${relative(srcRoot, file)} -> ${relative(srcRoot, target)}`)
      }
    }
    expect(upward).toStrictEqual([])
  })
})
