// compilerTiers.ts: after leaveMaglev() V8 no longer compiles with Maglev (checked in a child node
// with natives syntax: V8's optimization status bit 32 is "maglevved"), while it did before.
// The script's semicolons matter: a line starting with % would otherwise continue the last one.
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const module = fileURLToPath(new URL("../../src/cli/compilerTiers.ts", import.meta.url))
const MAGLEVVED = 32

const script = `
import { leaveMaglev } from ${JSON.stringify(module)}
const maglevved = () => {
  const f = new Function("x", "return x * 2 + 1");
  %PrepareFunctionForOptimization(f);
  f(1); f(2);
  %OptimizeMaglevOnNextCall(f);
  f(3);
  return %GetOptimizationStatus(f)
}
const before = maglevved()
leaveMaglev()
const after = maglevved()
console.log(JSON.stringify({ before, after }))
`

describe("leaveMaglev", () => {
  it("stops Maglev compiling from then on (it compiled before)", () => {
    const out = execFileSync(process.execPath, ["--allow-natives-syntax", "--input-type=module", "-e", script], { encoding: "utf8", timeout: CHILD_START_MS })
    const { before, after } = JSON.parse(out.trim()) as { before: number; after: number }
    expect(before & MAGLEVVED).toBe(MAGLEVVED)
    expect(after & MAGLEVVED).toBe(0)
  }, holdsStarts(1, 5000))
})
