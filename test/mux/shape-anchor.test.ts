// shapeAnchor.ts: a function TurboFan compiled around a class's instances keeps its optimized code
// through a last-resort full GC (the idle GC's, cli/memoryRelease.ts) taken with no instance alive
// when the class anchors its newest instance, and loses it without the anchor. Checked in a child
// node with natives syntax (V8's optimization status bit 16 is "optimized"; code marked for
// deoptimization no longer counts). Compiled on the main thread: a background TurboFan job V8
// starts by itself could otherwise install fresh code after the GC. The script's semicolons matter:
// a line starting with % would otherwise continue the last one. `keep`, for classes whose instances
// may carry a large payload, passes over such an instance.
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { MAX_KEPT_PAYLOAD_BYTES, ShapeAnchor } from "../../src/mux/shapeAnchor.ts"

const module = fileURLToPath(new URL("../../src/mux/shapeAnchor.ts", import.meta.url))
const OPTIMIZED = 16

const script = `
import { ShapeAnchor } from ${JSON.stringify(module)}
const probe = (anchored) => {
  const anchor = new ShapeAnchor();
  class Thing {
    constructor(a, b) {
      if (anchored) anchor.newest = this;
      this.a = a;
      this.b = b;
      this.sum = a + b;
    }
  }
  const read = (thing) => thing.a * thing.b + thing.sum;
  const make = (i) => read(new Thing(i, 2));
  %PrepareFunctionForOptimization(make);
  for (let i = 0; i < 20; i++) make(i);
  %OptimizeFunctionOnNextCall(make);
  make(1);
  const before = %GetOptimizationStatus(make);
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  const after = %GetOptimizationStatus(make);
  return { before, after };
}
console.log(JSON.stringify({ anchored: probe(true), bare: probe(false) }))
`

describe("ShapeAnchor", () => {
  it("keeps optimized code that embeds its class's map through an idle last-resort GC (without it the code is thrown away)", () => {
    const out = execFileSync(process.execPath, ["--allow-natives-syntax", "--expose-gc", "--no-concurrent-recompilation", "--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 })
    const { anchored, bare } = JSON.parse(out.trim()) as Record<"anchored" | "bare", { before: number; after: number }>
    expect(anchored.before & OPTIMIZED).toBe(OPTIMIZED)
    expect(bare.before & OPTIMIZED).toBe(OPTIMIZED)
    expect(anchored.after & OPTIMIZED).toBe(OPTIMIZED)
    expect(bare.after & OPTIMIZED).toBe(0)
  })

  it("keep passes over an instance carrying more than MAX_KEPT_PAYLOAD_BYTES (a 16 MiB packet is not held until the next request)", () => {
    const anchor = new ShapeAnchor<{ readonly name: string }>()
    const small = { name: "small" }
    anchor.keep(small, MAX_KEPT_PAYLOAD_BYTES)
    expect(anchor.newest).toBe(small)
    anchor.keep({ name: "large" }, MAX_KEPT_PAYLOAD_BYTES + 1)
    expect(anchor.newest).toBe(small)
    anchor.keep({ name: "stream" }, Infinity)
    expect(anchor.newest).toBe(small)
  })
})
