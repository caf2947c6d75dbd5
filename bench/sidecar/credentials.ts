// The mTLS credentials of the bench's sidecars: a root and an intermediate made in memory, and a
// leaf per sidecar, written as the fixed files `--tls-credentials-dir` reads (key.pem, chain.pem,
// bundle.pem) into the bench's temp dir, which the bench removes at the end. Fixed files are for
// tests and benches only: a deployed sidecar gets its key in memory from the identity issuer.
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { createIntermediateCa, createRootCa, generateKeyPair, issueLeaf } from "../../src/identity/certificates.ts"
import { serviceSpiffeId } from "../../src/identity/spiffe.ts"

const day = 86_400_000

/** Writes a credentials directory per service under `dir`; returns each one's path. */
export const writeBenchCredentials = async (dir: string, services: ReadonlyArray<string>): Promise<Record<string, string>> => {
  const root = await createRootCa({ commonName: "bench root", lifetimeMs: 2 * day })
  const intermediate = await createIntermediateCa(root, { commonName: "bench intermediate", lifetimeMs: day })
  const out: Record<string, string> = {}
  for (const service of services) {
    const pair = await generateKeyPair()
    const leaf = await issueLeaf(intermediate, { spiffeId: serviceSpiffeId("iip-mesh.local", service), publicKey: pair.keys.publicKey, lifetimeMs: day })
    const path = join(dir, `credentials-${service}`)
    mkdirSync(path, { recursive: true, mode: 0o700 })
    writeFileSync(join(path, "key.pem"), pair.privateKeyPem, { mode: 0o600 })
    writeFileSync(join(path, "chain.pem"), leaf + intermediate.certificatePem)
    writeFileSync(join(path, "bundle.pem"), root.certificatePem)
    out[service] = path
  }
  return out
}
