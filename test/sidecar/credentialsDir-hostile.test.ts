// Hostile files in --tls-credentials-dir (readCredentialsDir, src/sidecar/meshTls.ts): a FIFO, a
// file of 100 MB, an expired leaf, a chain that leads to no root of the bundle. Each must end the
// start with a clear MtlsUnavailable, at once, never block the event loop or read the file whole.
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf } from "../../src/identity/certificates.ts"
import { serviceSpiffeId } from "../../src/identity/spiffe.ts"
import { readCredentialsDir } from "../../src/sidecar/meshTls.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const day = 86_400_000
let dir: string

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "creds-hostile-"))
})
afterEach(() => rmSync(dir, { recursive: true, force: true }))

/** A credentials directory as the benches write it; `leafFrom` moves the leaf's validity (an expired one). */
const writeCredentials = async (path: string, options: { readonly leafFrom?: Date; readonly otherRoot?: boolean; readonly severalRoots?: boolean } = {}): Promise<void> => {
  // Root and intermediate valid from before the expired leaf's time until days from now.
  const root = await createRootCa({ commonName: "hostile root", lifetimeMs: 10 * day, notBefore: new Date(Date.now() - 4 * day) })
  const intermediate = await createIntermediateCa(root, { commonName: "hostile intermediate", lifetimeMs: 6 * day, notBefore: new Date(Date.now() - 3 * day) })
  const pair = await generateKeyPair()
  const leaf = await issueLeaf(intermediate, {
    spiffeId: serviceSpiffeId("iip-mesh.local", "web"),
    publicKey: pair.keys.publicKey,
    lifetimeMs: day,
    ...(options.leafFrom === undefined ? {} : { notBefore: options.leafFrom })
  })
  mkdirSync(path, { recursive: true })
  writeFileSync(join(path, "key.pem"), pair.privateKeyPem)
  writeFileSync(join(path, "chain.pem"), leaf + intermediate.certificatePem)
  const other = options.otherRoot === true || options.severalRoots === true ? (await createRootCa({ commonName: "other root", lifetimeMs: day })).certificatePem : ""
  writeFileSync(join(path, "bundle.pem"), options.otherRoot === true ? other : other + root.certificatePem)
}

const failureOf = (path: string) => Effect.runPromise(Effect.flip(readCredentialsDir(path)))

describe("readCredentialsDir against hostile files", () => {
  it("reads good credentials", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000) })
    const source = await Effect.runPromise(readCredentialsDir(dir))
    expect(source.current().spiffeId).toBe(serviceSpiffeId("iip-mesh.local", "web"))
  })

  it("reads a chain with an intermediate leading to the second of several roots in bundle.pem", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000), severalRoots: true })
    const source = await Effect.runPromise(readCredentialsDir(dir))
    expect(source.current().spiffeId).toBe(serviceSpiffeId("iip-mesh.local", "web"))
  })

  it("takes a leaf not yet valid by a clock skew (written by a host whose clock is ahead): read once and never again, a refusal at start would be for good", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() + 30_000) })
    const source = await Effect.runPromise(readCredentialsDir(dir))
    expect(source.current().spiffeId).toBe(serviceSpiffeId("iip-mesh.local", "web"))
  })

  it("refuses a leaf not valid for longer than a clock skew explains", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() + 2 * 3_600_000) })
    expect((await failureOf(dir)).message).toMatch(/certificate 0 of the chain is not valid at/)
  })

  it("refuses a bundle.pem of 100 MB unread, naming it and its size", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000) })
    truncateSync(join(dir, "bundle.pem"), 100 * 1024 * 1024)
    const started = performance.now()
    const failure = await failureOf(dir)
    expect(failure._tag).toBe("MtlsUnavailable")
    expect(failure.message).toMatch(/bundle\.pem: larger than \d+ bytes \(104857600\)/)
    expect(performance.now() - started).toBeLessThan(1_000)
  })

  it("refuses a key.pem over the secret file bound", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000) })
    truncateSync(join(dir, "key.pem"), 10 * 1024 * 1024)
    expect((await failureOf(dir)).message).toMatch(/key\.pem: larger than/)
  })

  it("refuses a FIFO as chain.pem without waiting for a writer (a child process, so a blocked loop cannot hang the test)", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000) })
    rmSync(join(dir, "chain.pem"))
    execFileSync("mkfifo", [join(dir, "chain.pem")])
    const script = `import * as Effect from "effect/Effect"
import { readCredentialsDir } from ${JSON.stringify(join(process.cwd(), "src/sidecar/meshTls.ts"))}
const failure = await Effect.runPromise(Effect.flip(readCredentialsDir(${JSON.stringify(dir)})))
console.log(failure.message)`
    const child = spawn(join(process.cwd(), "node_modules/.bin/node"), ["--input-type=module", "-e", script], { cwd: process.cwd(), stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), CHILD_START_MS)
      child.once("exit", (exitCode) => {
        clearTimeout(timer)
        resolve(exitCode)
      })
    })
    expect(output).toMatch(/chain\.pem: not a regular file/)
    expect(code).toBe(0)
  }, holdsStarts(1, 10_000))

  it("refuses an expired leaf, saying so", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 2 * day) })
    expect((await failureOf(dir)).message).toMatch(/certificate 0 of the chain is not valid at/)
  })

  it("refuses a chain that leads to no root of bundle.pem", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000), otherRoot: true })
    expect((await failureOf(dir)).message).toMatch(/leads to no root of the trust bundle/)
  })

  it("refuses malformed PEM with the parser's reason", async () => {
    await writeCredentials(dir, { leafFrom: new Date(Date.now() - 60_000) })
    writeFileSync(join(dir, "chain.pem"), "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    expect((await failureOf(dir))._tag).toBe("MtlsUnavailable")
  })
})
