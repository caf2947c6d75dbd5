// `iip-mesh identity` as the command it is: it starts from a `ca init` directory and a join-token
// file, prints its ready line, signs a sidecar's request end to end, stops on SIGTERM with exit 0;
// it follows its CA directory through a rotation's steps (the two-root bundle first, signing under
// the new root only after switch-intermediate); --join-token-ttl ends the tokens of a file written
// longer ago; and it refuses to start with no proof it could take, outside a cluster with
// --kubernetes on, or with a trust domain its intermediate does not name; it re-reads its join-token
// file while it runs (a token removed is refused at once, a new one taken, a bad file changes nothing);
// its per-source limits are taken from their flags.
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { X509Certificate } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as https from "node:https"
import * as net from "node:net"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initCa, rotateCa, switchIntermediate } from "../../src/identity/caDirectory.ts"
import { certificatesOfPem } from "../../src/identity/trustBundle.ts"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { createCertificateRequest } from "../../src/identity/certificateRequest.ts"
import { issuerSigner } from "../../src/identity/signers.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const work = mkdtempSync(join(tmpdir(), "iip-mesh-identity-command-"))
const caDir = join(work, "ca")
const token = "t".repeat(40)
const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("KUBERNETES_")))
/**
 * Bounds sized for a loaded machine (a CLI start takes 2 s of CPU, 9 s of wall time at load 15):
 * each wait ends at its event (a line, an exit), so a quiet machine never waits them out.
 */
const START_MS = 60_000
const TEST_MS = 90_000
/** A re-read of the join-token file lands well under a second after the write (watched, 250 ms settle); bounded for a loaded machine. */
const RELOAD_MS = 20_000

beforeAll(async () => {
  await initCa({ dir: caDir, trustDomain: "cmd.mesh" })
  writeFileSync(join(work, "join-tokens"), `# demo tokens\n${token} catalog\n`)
})
afterAll(() => rmSync(work, { recursive: true, force: true }))

const run = (...args: Array<string>) =>
  new Promise<{ code: number; stderr: string }>((done) => {
    execFile(process.execPath, [main, "identity", ...args], { timeout: START_MS, env }, (error, _stdout, stderr) => done({ code: error === null ? 0 : Number(error.code ?? 1), stderr }))
  })

/** The first JSON line on `stream` (the child's stdout or stderr) naming `event`; fails when the child exits first or after START_MS. */
const lineOf = <A>(child: ChildProcess, stream: NodeJS.ReadableStream, event: string) =>
  new Promise<A>((found, failed) => {
    let out = ""
    const timer = setTimeout(() => failed(new Error(`no ${event} line within ${START_MS} ms`)), START_MS)
    stream.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n").find((l) => l.includes(`"${event}"`))
      if (line !== undefined) {
        clearTimeout(timer)
        found(JSON.parse(line) as A)
      }
    })
    child.once("exit", (code) => {
      clearTimeout(timer)
      failed(new Error(`exited with ${code}`))
    })
  })

/**
 * A child's stderr as it comes, and a wait until it holds `pattern` `count` times: checked as each
 * chunk comes in, failing after `boundMs` with what was read.
 */
const stderrOf = (child: ChildProcess, boundMs: number) => {
  let text = ""
  child.stderr!.on("data", (chunk: Buffer) => (text += chunk.toString()))
  const waitFor = (pattern: RegExp, count = 1) =>
    new Promise<void>((found, failed) => {
      const check = () => {
        if ((text.match(new RegExp(pattern.source, "g")) ?? []).length < count) return
        clearTimeout(timer)
        child.stderr!.off("data", check)
        found()
      }
      const timer = setTimeout(() => {
        child.stderr!.off("data", check)
        failed(new Error(`no ${pattern} (x${count}) within ${boundMs} ms: ${text}`))
      }, boundMs)
      child.stderr!.on("data", check)
      check()
    })
  return { text: () => text, waitFor }
}

/**
 * An issuer started with `flags`: one connection from 127.0.0.1, held without a handshake, then
 * a signer's from the same address, which must be closed at accept and logged as `refusedLine`.
 */
const closedAtAccept = async (flags: Array<string>, refusedLine: RegExp) => {
  const child: ChildProcess = spawn(process.execPath, [main, "identity", "--ca-dir", caDir, "--listen", "127.0.0.1:0", "--join-tokens", join(work, "join-tokens"), ...flags], { env, stdio: ["ignore", "ignore", "pipe"] })
  const stderr = stderrOf(child, START_MS)
  const held = new net.Socket()
  try {
    const ready = await lineOf<{ address: string }>(child, child.stderr!, "identity-issuer-ready")
    const [host, port] = [ready.address.slice(0, ready.address.lastIndexOf(":")), Number(ready.address.slice(ready.address.lastIndexOf(":") + 1))]
    const pair = await generateKeyPair()
    const csr = await createCertificateRequest(pair.keys, undefined)
    const signer = issuerSigner({ issuerUrl: `https://${ready.address}`, trustDomain: "cmd.mesh", trustBundle: () => readFileSync(join(caDir, "bundle.pem"), "utf8"), proof: () => ({ kind: "join", token }) })
    await new Promise<void>((connected) => held.connect(port, host, connected))
    await expect(signer(csr)).rejects.toThrow(/socket disconnected|ECONNRESET|socket hang up/)
    await stderr.waitFor(refusedLine)
  } finally {
    held.destroy()
    child.kill("SIGKILL")
  }
}

/** Starts, side by side, each with one `[flag, range]` set to 0: each stops, naming its flag and range. */
const refusedOutOfRange = async (...limits: Array<readonly [string, string]>) => {
  const results = await Promise.all(limits.map(([flag]) => run("--ca-dir", caDir, "--join-tokens", join(work, "join-tokens"), flag, "0")))
  results.forEach((result, i) => expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining(`${limits[i]![0]}: expected ${limits[i]![1]}, got 0`) }))
}

describe("iip-mesh identity", () => {
  it("serves signing requests from a ca init directory with join tokens, and stops on SIGTERM with exit 0", async () => {
    const child: ChildProcess = spawn(process.execPath, [main, "identity", "--ca-dir", caDir, "--listen", "127.0.0.1:0", "--join-tokens", join(work, "join-tokens")], { env, stdio: ["ignore", "pipe", "pipe"] })
    try {
      const ready = await lineOf<{ listen: string; trustDomain: string }>(child, child.stdout!, "identity-ready")
      expect(ready.trustDomain).toBe("cmd.mesh")
      const pair = await generateKeyPair()
      const signer = issuerSigner({
        issuerUrl: `https://${ready.listen}`,
        trustDomain: "cmd.mesh",
        trustBundle: () => readFileSync(join(caDir, "bundle.pem"), "utf8"),
        proof: () => ({ kind: "join", token })
      })
      const answer = await signer(await createCertificateRequest(pair.keys, "spiffe://cmd.mesh/svc/catalog"))
      expect(answer.spiffeId).toBe("spiffe://cmd.mesh/svc/catalog")
      const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
      child.kill("SIGTERM")
      expect(await exited).toBe(0)
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL")
    }
  }, TEST_MS)

  it("picks up a rotated CA directory without a restart, and keeps its CA when the directory turns invalid", async () => {
    const dir = join(work, "rotating")
    await initCa({ dir, trustDomain: "cmd.mesh" })
    const oldRoot = readFileSync(join(dir, "root.pem"), "utf8")
    const child: ChildProcess = spawn(
      process.execPath,
      [main, "identity", "--ca-dir", dir, "--listen", "127.0.0.1:0", "--join-tokens", join(work, "join-tokens"), "--ca-reload-interval", "100ms"],
      { env, stdio: ["ignore", "pipe", "pipe"] }
    )
    const stderr = stderrOf(child, START_MS)
    const waitFor = stderr.waitFor
    try {
      await waitFor(/"identity-issuer-ready"/)
      const listen = /"address":"([^"]+)"/.exec(stderr.text())![1]!
      const sign = async () => {
        const pair = await generateKeyPair()
        const signer = issuerSigner({ issuerUrl: `https://${listen}`, trustDomain: "cmd.mesh", trustBundle: () => readFileSync(join(dir, "bundle.pem"), "utf8"), proof: () => ({ kind: "join", token }) })
        const answer = await signer(await createCertificateRequest(pair.keys, "spiffe://cmd.mesh/svc/catalog"))
        const chain = certificatesOfPem(answer.certificateChainPem).map((pem) => new X509Certificate(pem))
        const roots = certificatesOfPem(answer.trustBundlePem)
        return { issuedBy: roots.find((root) => chain[1]!.verify(new X509Certificate(root).publicKey)), roots: roots.length }
      }
      expect(await sign()).toStrictEqual({ issuedBy: oldRoot, roots: 1 })
      await rotateCa({ dir, trustDomain: "cmd.mesh" })
      await waitFor(/"identity-ca-replaced".*"roots":2/)
      // The two-root bundle is handed out, signing stays under the old root until the switch.
      expect(await sign()).toStrictEqual({ issuedBy: oldRoot, roots: 2 })
      switchIntermediate({ dir })
      await waitFor(/"identity-ca-replaced".*"roots":2[\s\S]*"identity-ca-replaced".*"roots":2/)
      const newRoot = readFileSync(join(dir, "root.pem"), "utf8")
      expect(await sign()).toStrictEqual({ issuedBy: newRoot, roots: 2 })
      writeFileSync(join(dir, "intermediate.pem"), "not a certificate\n")
      await waitFor(/"identity-ca-reload-failed".*must hold exactly one certificate/)
      expect(await sign()).toStrictEqual({ issuedBy: newRoot, roots: 2 })
    } finally {
      child.kill("SIGKILL")
    }
  }, TEST_MS)

  it("--join-token-ttl ends the tokens of a file written longer ago: its ready line counts them ended and a join with one is refused; a TTL under a minute does not start", async () => {
    const file = join(work, "old-join-tokens")
    writeFileSync(file, `${token} catalog\n`)
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000)
    utimesSync(file, twoHoursAgo, twoHoursAgo)
    const child: ChildProcess = spawn(process.execPath, [main, "identity", "--ca-dir", caDir, "--listen", "127.0.0.1:0", "--join-tokens", file, "--join-token-ttl", "1h"], { env, stdio: ["ignore", "ignore", "pipe"] })
    try {
      // The issuer's own ready line (on stderr, the log) carries the count of tokens already ended.
      const ready = await lineOf<{ address: string; joinTokens: number; joinTokensExpired: number }>(child, child.stderr!, "identity-issuer-ready")
      expect(ready).toMatchObject({ joinTokens: 1, joinTokensExpired: 1 })
      const pair = await generateKeyPair()
      const signer = issuerSigner({ issuerUrl: `https://${ready.address}`, trustDomain: "cmd.mesh", trustBundle: () => readFileSync(join(caDir, "bundle.pem"), "utf8"), proof: () => ({ kind: "join", token }) })
      await expect(signer(await createCertificateRequest(pair.keys, "spiffe://cmd.mesh/svc/catalog"))).rejects.toThrow(/401 bad-join-token\): the join token expired at /)
    } finally {
      child.kill("SIGKILL")
    }
    expect(await run("--ca-dir", caDir, "--join-tokens", file, "--join-token-ttl", "30s")).toMatchObject({ code: 1, stderr: expect.stringMatching(/join-token-ttl/) })
  }, TEST_MS)

  it("re-reads its --join-tokens file while it runs: a token removed is refused from the next request on, a new one taken; a bad file keeps the last good tokens, logged and counted", async () => {
    const file = join(work, "reloaded-join-tokens")
    const pricingToken = "p".repeat(40)
    writeFileSync(file, `${token} catalog\n`)
    const child: ChildProcess = spawn(process.execPath, [main, "identity", "--ca-dir", caDir, "--listen", "127.0.0.1:0", "--join-tokens", file], { env, stdio: ["ignore", "ignore", "pipe"] })
    const stderr = stderrOf(child, RELOAD_MS)
    const waitFor = stderr.waitFor
    try {
      await waitFor(/"identity-issuer-ready"/)
      const listen = /"address":"([^"]+)"/.exec(stderr.text())![1]!
      const bundle = readFileSync(join(caDir, "bundle.pem"), "utf8")
      /** The identity `secret` earns for `service`, or the refusal. */
      const sign = async (secret: string, service: string) => {
        const pair = await generateKeyPair()
        const signer = issuerSigner({ issuerUrl: `https://${listen}`, trustDomain: "cmd.mesh", trustBundle: () => bundle, proof: () => ({ kind: "join", token: secret }) })
        return signer(await createCertificateRequest(pair.keys, `spiffe://cmd.mesh/svc/${service}`)).then((answer) => answer.spiffeId, (error: Error) => error.message)
      }
      const reloads = () =>
        new Promise<string>((done, failed) => {
          https.get(`https://${listen}/metrics`, { ca: bundle, checkServerIdentity: () => undefined }, (response) => {
            let text = ""
            response.on("data", (chunk: Buffer) => (text += chunk.toString()))
            response.on("end", () => done(text.split("\n").filter((line) => line.startsWith("iip_mesh_issuer_join_tokens_reloads_total")).join("\n")))
          }).on("error", failed)
        })
      expect(await sign(token, "catalog")).toBe("spiffe://cmd.mesh/svc/catalog")
      expect(await sign(pricingToken, "pricing")).toMatch(/401 bad-join-token\): unknown join token/)
      // Rewritten in place, as an operator's editor or `echo >` does: the catalog token revoked, a pricing one added.
      writeFileSync(file, `${pricingToken} pricing\n`)
      await waitFor(/"identity-join-tokens-loaded"/, 2)
      expect(await sign(token, "catalog")).toMatch(/401 bad-join-token\): unknown join token/)
      expect(await sign(pricingToken, "pricing")).toBe("spiffe://cmd.mesh/svc/pricing")
      // A file that does not parse (a short token) changes nothing: the last good tokens stay, logged and counted.
      writeFileSync(file, `short catalog\n`)
      await waitFor(/"identity-join-tokens-invalid".*at least 32 characters/)
      expect(await sign(pricingToken, "pricing")).toBe("spiffe://cmd.mesh/svc/pricing")
      expect(await sign(token, "catalog")).toMatch(/401 bad-join-token\): unknown join token/)
      expect(stderr).not.toContain(pricingToken)
      expect(await reloads()).toBe('iip_mesh_issuer_join_tokens_reloads_total{result="ok"} 1\niip_mesh_issuer_join_tokens_reloads_total{result="invalid"} 1')
    } finally {
      child.kill("SIGKILL")
    }
  }, TEST_MS)

  it("--max-connections-per-source closes an address's connection past it at accept (logged); out-of-range per-source limits do not start", async () => {
    // 127.0.0.1's one connection, held without a handshake: the signer's, from the same address, is closed.
    await closedAtAccept(["--max-connections-per-source", "1"], /"event":"identity-connection-refused","limit":"per_source","detail":"this source's share of connections \(1\) is taken","remote":"127\.0\.0\.1"/)
    await refusedOutOfRange(["--max-in-flight-per-source", "1..100000"], ["--max-connections-per-source", "1..1000000"])
  }, TEST_MS)

  it("--handshake-rate-per-source / --handshake-burst-per-source close an address's connection past its bucket at accept (logged); out-of-range values do not start", async () => {
    // 127.0.0.1's one handshake of the burst, taken by a connection that never starts it: the
    // signer's, right after (well within the second a token takes to come back), is closed.
    await closedAtAccept(["--handshake-rate-per-source", "1", "--handshake-burst-per-source", "1"], /"event":"identity-connection-refused","limit":"handshake_rate","detail":"this source's TLS handshakes are past 1\/s, burst 1","remote":"127\.0\.0\.1"/)
    await refusedOutOfRange(["--handshake-rate-per-source", "1..1000000"], ["--handshake-burst-per-source", "1..1000000"], ["--ipv6-source-prefix", "16..128"])
  }, TEST_MS)

  it("refuses to start with no proof it could take, with --kubernetes on outside a cluster, or with another trust domain", async () => {
    // Four independent starts, side by side.
    const [noProof, kubernetes, otherDomain, missing] = await Promise.all([
      run("--ca-dir", caDir, "--listen", "127.0.0.1:0"),
      run("--ca-dir", caDir, "--listen", "127.0.0.1:0", "--kubernetes", "on"),
      run("--ca-dir", caDir, "--join-tokens", join(work, "join-tokens"), "--trust-domain", "other.mesh"),
      run("--ca-dir", join(work, "missing"), "--join-tokens", join(work, "join-tokens"))
    ])
    expect(noProof).toMatchObject({ code: 1, stderr: expect.stringMatching(/no proof is accepted/) })
    expect(kubernetes).toMatchObject({ code: 1, stderr: expect.stringMatching(/not running in a cluster/) })
    expect(otherDomain).toMatchObject({ code: 1, stderr: expect.stringMatching(/intermediate names trust domain cmd\.mesh/) })
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/cannot read .*intermediate\.pem/) })
  }, TEST_MS)
})
