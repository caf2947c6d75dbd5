// The files the identity issuer reads for itself, which it does not trust to be what they should:
// in a cluster its ServiceAccount's ca.crt (once, at start) and token (on every TokenReview, while
// it serves), the --join-tokens file (at start and whenever it changes), its CA directory (every --ca-reload-interval
// while it serves). A FIFO (whose read waits for a writer,
// for good) or a file larger than such a file may be is refused unread, the error naming the file.
import { execFileSync } from "node:child_process"
import { appendFileSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { caDirectoryVersion, caFiles, initCa, loadIssuingCa } from "../../src/identity/caDirectory.ts"
import * as Result from "effect/Result"
import { MAX_JOIN_TOKENS_FILE_BYTES, readJoinTokensFile as readResult } from "../../src/identity/joinTokensFile.ts"
import { inClusterTokenReview, ProofRefused, reviewServiceAccountToken } from "../../src/identity/proofs.ts"

/** The tokens of the file, or its refusal's message thrown. */
const readJoinTokensFile = async (path: string, defaultTtlMs: number) => {
  const read = await readResult(path, defaultTtlMs)
  if (Result.isFailure(read)) throw new Error(read.failure.message)
  return read.success
}

const inCluster = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "1" }

describe("the identity issuer's own files", () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "iip-mesh-issuer-files-"))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  /** Replaces `dir/name` with a FIFO nobody writes. */
  const fifo = (name: string) => {
    rmSync(join(dir, name), { force: true })
    execFileSync("mkfifo", [join(dir, name)])
  }

  it("its ServiceAccount token, read on every TokenReview, is refused unread when over 64 KiB or a FIFO: the review fails naming the file, asking nobody", async () => {
    writeFileSync(join(dir, "ca.crt"), "the API server's CA")
    writeFileSync(join(dir, "token"), "issuer-own-token\n")
    const options = inClusterTokenReview(inCluster, "iip-mesh-identity", 1000, dir)!
    const token = () => Promise.resolve().then(() => options.bearerToken())
    expect(await token()).toBe("issuer-own-token")
    // Before, the whole file was read and sent as the bearer token.
    writeFileSync(join(dir, "token"), "t".repeat(70_000))
    await expect(token()).rejects.toThrow(`${dir}/token: larger than 65536 bytes (70000)`)
    // Before, readFileSync waited on the issuer's event loop for a writer, for good.
    fifo("token")
    await expect(token()).rejects.toThrow(`${dir}/token: not a regular file`)
    // The review fails as the API server being unavailable does (the port is closed: not reached).
    const refused = await reviewServiceAccountToken(options, "a-sidecar-token").then(() => undefined, (error: unknown) => error)
    expect(refused).toBeInstanceOf(ProofRefused)
    expect([(refused as ProofRefused).reason, (refused as ProofRefused).detail]).toStrictEqual(["token-review-unavailable", `TokenReview failed: ${dir}/token: not a regular file`])
  })

  it("its ServiceAccount ca.crt, read once at start, is refused unread when over 64 KiB or a FIFO, naming the file", () => {
    writeFileSync(join(dir, "token"), "issuer-own-token\n")
    writeFileSync(join(dir, "ca.crt"), " ".repeat(70_000))
    expect(() => inClusterTokenReview(inCluster, "iip-mesh-identity", 1000, dir)).toThrow(`${dir}/ca.crt: larger than 65536 bytes (70000)`)
    fifo("ca.crt")
    expect(() => inClusterTokenReview(inCluster, "iip-mesh-identity", 1000, dir)).toThrow(`${dir}/ca.crt: not a regular file`)
  })

  it(`the --join-tokens file, read at start and on every change, is refused unread when over ${MAX_JOIN_TOKENS_FILE_BYTES} bytes or a FIFO, naming the file`, async () => {
    const file = join(dir, "join-tokens")
    writeFileSync(file, `${"t".repeat(40)} catalog\n`)
    // A token without expires= ends the TTL after the file was written: an issuer restarted later does not extend it.
    expect((await readJoinTokensFile(file, 3_600_000)).map((token) => [[...token.services], token.expiresAt])).toStrictEqual([[["catalog"], statSync(file).mtimeMs + 3_600_000]])
    // A write time in the future (a skewed clock where the file was made, touch -d) would stretch the
    // TTL as far: no token ends later than the TTL from the issuer's start.
    const future = new Date(Date.now() + 10 * 365 * 86_400_000)
    utimesSync(file, future, future)
    const before = Date.now()
    const [stretched] = await readJoinTokensFile(file, 3_600_000)
    expect(stretched!.expiresAt).toBeGreaterThanOrEqual(before + 3_600_000)
    expect(stretched!.expiresAt).toBeLessThanOrEqual(Date.now() + 3_600_000)
    // Any write starts the TTL again for a line without expires=, one that had ended included (the
    // file holds no other time; PROTOCOL.md tells operators); a line with expires= keeps its end.
    const long = new Date(Date.now() - 2 * 3_600_000)
    writeFileSync(file, `${"t".repeat(40)} catalog\n${"u".repeat(40)} pricing expires=${long.toISOString()}\n`)
    utimesSync(file, long, long)
    expect((await readJoinTokensFile(file, 3_600_000)).map((token) => token.expiresAt < Date.now())).toStrictEqual([true, true])
    appendFileSync(file, `${"v".repeat(40)} storefront\n`)
    expect((await readJoinTokensFile(file, 3_600_000)).map((token) => token.expiresAt < Date.now())).toStrictEqual([false, true, false])
    writeFileSync(file, `${"t".repeat(40)} catalog\n`.padEnd(MAX_JOIN_TOKENS_FILE_BYTES + 1, "#"))
    await expect(readJoinTokensFile(file, 3_600_000)).rejects.toThrow(`${file}: larger than ${MAX_JOIN_TOKENS_FILE_BYTES} bytes (${MAX_JOIN_TOKENS_FILE_BYTES + 1})`)
    fifo("join-tokens")
    await expect(readJoinTokensFile(file, 3_600_000)).rejects.toThrow(`${file}: not a regular file`)
  })

  it("its CA directory, re-read while it serves: a FIFO or a file over 64 KiB as bundle.pem is refused unread, the directory's version changes and loading it fails naming the file", async () => {
    await initCa({ dir, trustDomain: "files.mesh" })
    const bundle = join(dir, caFiles.bundle)
    const sound = caDirectoryVersion(dir)
    expect(caDirectoryVersion(dir)).toBe(sound)
    // Before, the whole file was read, on the issuer's event loop.
    writeFileSync(bundle, " ".repeat(70_000))
    const huge = caDirectoryVersion(dir)
    expect(huge).not.toBe(sound)
    expect(() => loadIssuingCa(dir)).toThrow(`cannot read ${bundle}: larger than 65536 bytes (70000)`)
    // Before, readFileSync waited for a writer, for good: the issuer stopped serving.
    fifo(caFiles.bundle)
    expect(caDirectoryVersion(dir)).not.toBe(huge)
    expect(() => loadIssuingCa(dir)).toThrow(`cannot read ${bundle}: not a regular file`)
  })
})
