// The mesh's CA on disk: what `iip-mesh ca init` writes and `iip-mesh identity` (or a sidecar in
// development mode) reads. A directory holds the offline root, the intermediate the issuer signs
// with, and the trust bundle every sidecar verifies peers against:
//
//   root.pem  root.key.pem                     the root (keep the key offline)
//   intermediate.pem  intermediate.key.pem     the issuer's signing CA (a Kubernetes Secret)
//   bundle.pem                                 the roots peers are verified against
//   previous-root.pem  previous-root.key.pem   during a rotation only: the root being retired
//   next-intermediate.pem  next-intermediate.key.pem   from `ca rotate` to `ca switch-intermediate`:
//                                              the new root's intermediate, not yet in service
//
// `ca renew-intermediate` replaces only the intermediate (the root and the bundle stay): the yearly
// renewal. A root rotation without downtime, in the order that keeps every handshake working:
// `ca rotate` makes a new root, a bundle with both roots, and the new root's intermediate set
// aside, so an issuer that re-reads this directory hands out the two-root bundle but keeps signing
// under the old root (a sidecar that has not fetched the bundle yet would refuse a leaf under the
// new one); once every sidecar holds that bundle (within minutes: they fetch it between renewals),
// `ca switch-intermediate` puts the new intermediate in service; once every leaf under the old root
// has expired, `ca finish-rotation` drops the old root from the bundle. Keys are written mode 0600
// and never overwritten in place.
//
// `ca rotate` writes, in this order: previous-root.key.pem and previous-root.pem (copies of the
// root), root.key.pem and root.pem (the new root), next-intermediate.key.pem and
// next-intermediate.pem, then bundle.pem with both roots. Until that last write the issuer's files
// (intermediate, its key, the bundle) are untouched; a rotate that died before it is finished by
// running `ca rotate` again (what is whole on disk is kept, the rest made), and every other step
// refuses such a directory, naming that command.
import * as Data from "effect/Data"
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from "node:crypto"
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { readSmallFile, type SmallFile } from "../iip/smallFile.ts"
import { type CertifiedKey, createIntermediateCa, createRootCa } from "./certificates.ts"
import { parseSpiffeId } from "./spiffe.ts"
import { certificatesOfPem, chainProblem, maxPemChars } from "./trustBundle.ts"

export class CaDirectoryError extends Data.TaggedError("CaDirectoryError")<{ readonly message: string }> {}

export const caFiles = {
  root: "root.pem",
  rootKey: "root.key.pem",
  intermediate: "intermediate.pem",
  intermediateKey: "intermediate.key.pem",
  bundle: "bundle.pem",
  previousRoot: "previous-root.pem",
  previousRootKey: "previous-root.key.pem",
  nextIntermediate: "next-intermediate.pem",
  nextIntermediateKey: "next-intermediate.key.pem"
} as const

const day = 86_400_000

export interface CaLifetimes {
  /** Default 10 years. */
  readonly rootLifetimeMs?: number
  /** Default 1 year. */
  readonly intermediateLifetimeMs?: number
}

export const checkTrustDomain = (trustDomain: string): string => {
  const parsed = parseSpiffeId(`spiffe://${trustDomain}`)
  if (parsed === undefined || parsed.path !== "") {
    throw new CaDirectoryError({ message: `not a trust domain (lowercase letters, digits, dots, dashes, underscores): ${JSON.stringify(trustDomain.slice(0, 100))}` })
  }
  return trustDomain
}

/** Writes `content` to `dir/name` through a temporary file and a rename, so a reader never sees half of it. */
const writeAtomically = (dir: string, name: string, content: string, mode: number): void => {
  const temporary = join(dir, `.${name}.${process.pid}.tmp`)
  // One a process of this id left when it died between the write and the rename (a container's
  // pid is the same at every run): without this the rerun that finishes its work failed EEXIST.
  rmSync(temporary, { force: true })
  writeFileSync(temporary, content, { mode, flag: "wx" })
  renameSync(temporary, join(dir, name))
}

/**
 * A file of the directory, a PEM item or two: read without blocking (a FIFO there is refused, not
 * waited on: the issuer re-reads the directory on its event loop while it serves) and at most
 * maxPemChars bytes.
 */
const readText = (path: string): string => {
  let read: SmallFile
  try {
    read = readSmallFile(path, maxPemChars, { followSymlink: true })
  } catch (cause) {
    throw new CaDirectoryError({ message: `cannot read ${path}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}` })
  }
  if ("problem" in read) throw new CaDirectoryError({ message: `cannot read ${path}: ${read.problem}` })
  return read.text
}

/** What the issuer's files in `dir` hold now, as one hash (a Secret update swaps all three at once); one not read hashes as why. */
export const caDirectoryVersion = (dir: string): string => {
  const hash = createHash("sha256")
  for (const name of [caFiles.intermediate, caFiles.intermediateKey, caFiles.bundle]) {
    try {
      hash.update(readText(join(dir, name)))
    } catch (error) {
      hash.update(`unread: ${(error as Error).message}`)
    }
    hash.update("\0")
  }
  return hash.digest("hex")
}

/** The trust domain a CA certificate names (its `spiffe://<td>` URI SAN), if any. */
const trustDomainOf = (certificate: X509Certificate): string | undefined =>
  (certificate.subjectAltName?.split(", ") ?? [])
    .map((name) => (name.startsWith("URI:") ? parseSpiffeId(name.slice(4)) : undefined))
    .find((id) => id !== undefined && id.path === "")?.trustDomain

const keyMatches = (privateKeyPem: string, certificate: X509Certificate): boolean => {
  try {
    const spki = (key: ReturnType<typeof createPublicKey>) => key.export({ type: "spki", format: "der" })
    return spki(createPublicKey(createPrivateKey(privateKeyPem))).equals(spki(certificate.publicKey))
  } catch {
    return false
  }
}

const stamp = () => new Date().toISOString().slice(0, 10)

const makeRoot = (trustDomain: string, lifetimes: CaLifetimes) =>
  createRootCa({ commonName: `iip-mesh root ${trustDomain} ${stamp()}`, trustDomain, lifetimeMs: lifetimes.rootLifetimeMs ?? 3650 * day })

const makeIntermediate = (root: CertifiedKey, trustDomain: string, lifetimes: CaLifetimes) =>
  createIntermediateCa(root, { commonName: `iip-mesh intermediate ${trustDomain} ${stamp()}`, trustDomain, lifetimeMs: lifetimes.intermediateLifetimeMs ?? 365 * day })

const makeCa = async (trustDomain: string, lifetimes: CaLifetimes) => {
  const root = await makeRoot(trustDomain, lifetimes)
  return { root, intermediate: await makeIntermediate(root, trustDomain, lifetimes) }
}

/** The one certificate of a PEM file's text, as certificatesOfPem writes it (undefined: not one). */
const onlyCertificate = (pem: string): string | undefined => {
  const certificates = certificatesOfPem(pem)
  return certificates.length === 1 ? certificates[0] : undefined
}

/** A certificate and its key, read from `dir`, when both are there and the key is the certificate's. */
const certifiedKeyIn = (dir: string, certificate: string, key: string): CertifiedKey | undefined => {
  if (!existsSync(join(dir, certificate)) || !existsSync(join(dir, key))) return undefined
  const pair = { certificatePem: readText(join(dir, certificate)), privateKeyPem: readText(join(dir, key)) }
  if (onlyCertificate(pair.certificatePem) === undefined) return undefined
  return keyMatches(pair.privateKeyPem, new X509Certificate(pair.certificatePem)) ? pair : undefined
}

/** A rotation rotate began and did not finish: the previous root written, the new root not yet (or not yet in the bundle). */
const rotationStopped = (dir: string): boolean => {
  if (!existsSync(join(dir, caFiles.previousRoot))) return false
  const root = onlyCertificate(readText(join(dir, caFiles.root)))
  return root === undefined || root === onlyCertificate(readText(join(dir, caFiles.previousRoot))) || !certificatesOfPem(readText(join(dir, caFiles.bundle))).includes(root)
}

const refuseStoppedRotation = (dir: string): void => {
  if (rotationStopped(dir)) {
    throw new CaDirectoryError({
      message: `${dir} holds a rotation that stopped midway (${caFiles.previousRoot} written, ${caFiles.bundle} without the new root; the issuer's files are untouched): run ca rotate again to finish it`
    })
  }
}

const writeCa = (dir: string, ca: { root: CertifiedKey; intermediate: CertifiedKey }, bundlePem: string): void => {
  writeAtomically(dir, caFiles.rootKey, ca.root.privateKeyPem, 0o600)
  writeAtomically(dir, caFiles.root, ca.root.certificatePem, 0o644)
  writeAtomically(dir, caFiles.intermediateKey, ca.intermediate.privateKeyPem, 0o600)
  writeAtomically(dir, caFiles.intermediate, ca.intermediate.certificatePem, 0o644)
  writeAtomically(dir, caFiles.bundle, bundlePem, 0o644)
}

/** A new mesh: root, intermediate and a one-root bundle in `dir` (created 0700), which must not hold a CA yet. */
export const initCa = async (options: { readonly dir: string; readonly trustDomain: string } & CaLifetimes): Promise<void> => {
  const trustDomain = checkTrustDomain(options.trustDomain)
  mkdirSync(options.dir, { recursive: true, mode: 0o700 })
  for (const name of Object.values(caFiles)) {
    if (existsSync(join(options.dir, name))) throw new CaDirectoryError({ message: `${join(options.dir, name)} exists: this directory holds a CA already (rotate it with ca rotate)` })
  }
  const ca = await makeCa(trustDomain, options)
  writeCa(options.dir, ca, ca.root.certificatePem)
}

/**
 * Starts a root rotation: the current root becomes previous-root, a new root replaces it, the
 * bundle holds both; the new root's intermediate waits in next-intermediate (switchIntermediate
 * puts it in service) while the intermediate in service, under the previous root, stays. The new
 * root names the current root's trust domain (`trustDomain` may only repeat it): the issuer
 * refuses an intermediate of another, and every identity in the mesh names this one.
 *
 * Run again on a rotation that stopped before its bundle write (the process died), it finishes
 * it: the previous root kept, the new root and its intermediate kept if whole (made otherwise),
 * then the bundle. `written` is told each file once it is in place, in the order of the header.
 * "resumed" when it finished a stopped rotation.
 */
export const rotateCa = async (
  options: { readonly dir: string; readonly trustDomain?: string; readonly written?: (name: string) => void } & CaLifetimes
): Promise<"started" | "resumed"> => {
  if (options.trustDomain !== undefined) checkTrustDomain(options.trustDomain)
  const dir = options.dir
  const at = (name: string) => join(dir, name)
  const write = (name: string, content: string, mode: number) => {
    writeAtomically(dir, name, content, mode)
    options.written?.(name)
  }
  if (!existsSync(at(caFiles.root)) || !existsSync(at(caFiles.rootKey))) throw new CaDirectoryError({ message: `${dir} holds no root to rotate (ca init first)` })
  const resumed = rotationStopped(dir)
  if (existsSync(at(caFiles.previousRoot)) && !resumed) {
    const next = existsSync(at(caFiles.nextIntermediate))
      ? "ca switch-intermediate next (once every sidecar holds the two-root bundle), then ca finish-rotation"
      : "ca finish-rotation next (once every leaf under the previous root has expired)"
    throw new CaDirectoryError({ message: `a rotation is in progress in ${dir} (${caFiles.bundle} holds both roots): ${next}` })
  }
  const previous = resumed ? certifiedKeyIn(dir, caFiles.previousRoot, caFiles.previousRootKey) : certifiedKeyIn(dir, caFiles.root, caFiles.rootKey)
  if (previous === undefined) {
    const [certificate, key] = resumed ? [caFiles.previousRoot, caFiles.previousRootKey] : [caFiles.root, caFiles.rootKey]
    throw new CaDirectoryError({ message: `${at(key)} is not the key of ${at(certificate)} (or either is not one PEM item): not a directory ca init or ca rotate wrote` })
  }
  const named = trustDomainOf(new X509Certificate(previous.certificatePem))
  if (named !== undefined && options.trustDomain !== undefined && options.trustDomain !== named) {
    throw new CaDirectoryError({ message: `${at(resumed ? caFiles.previousRoot : caFiles.root)} names trust domain ${named}, not ${options.trustDomain}: a rotation keeps the mesh's trust domain` })
  }
  const trustDomain = named ?? options.trustDomain
  if (trustDomain === undefined) throw new CaDirectoryError({ message: `${at(caFiles.root)} names no trust domain: give the mesh's (--trust-domain)` })
  if (!resumed) {
    // Copies, not moves: root.pem and its key stay whole at every step.
    write(caFiles.previousRootKey, previous.privateKeyPem, 0o600)
    write(caFiles.previousRoot, previous.certificatePem, 0o644)
  }
  // The new root: the one on disk if rotate wrote it whole before it stopped.
  const onDisk = certifiedKeyIn(dir, caFiles.root, caFiles.rootKey)
  let root: CertifiedKey
  if (onDisk !== undefined && onlyCertificate(onDisk.certificatePem) !== onlyCertificate(previous.certificatePem)) root = onDisk
  else {
    root = await makeRoot(trustDomain, options)
    write(caFiles.rootKey, root.privateKeyPem, 0o600)
    write(caFiles.root, root.certificatePem, 0o644)
  }
  const next = certifiedKeyIn(dir, caFiles.nextIntermediate, caFiles.nextIntermediateKey)
  if (next === undefined || chainProblem(next.certificatePem, root.certificatePem, new Date()) !== undefined) {
    const intermediate = await makeIntermediate(root, trustDomain, options)
    write(caFiles.nextIntermediateKey, intermediate.privateKeyPem, 0o600)
    write(caFiles.nextIntermediate, intermediate.certificatePem, 0o644)
  }
  write(caFiles.bundle, root.certificatePem + previous.certificatePem, 0o644)
  return resumed ? "resumed" : "started"
}

/**
 * The rotation's second step, once every sidecar holds the two-root bundle: the new root's
 * intermediate replaces the one in service (the key first, so the pair a reader sees is at worst
 * the new key with the old certificate, which loadIssuingCa refuses, never a wrong pair it takes).
 * Run again after dying between the two renames, it finds the waiting certificate's key in
 * service already and completes the switch (every other step refuses while a certificate waits).
 */
export const switchIntermediate = (options: { readonly dir: string }): void => {
  const at = (name: string) => join(options.dir, name)
  refuseStoppedRotation(options.dir)
  if (!existsSync(at(caFiles.nextIntermediate))) throw new CaDirectoryError({ message: `no intermediate waits to be switched to in ${options.dir} (ca rotate first)` })
  // A rotate that died before writing the two-root bundle: switching would hand the issuer a CA it refuses to load.
  const problem = chainProblem(readText(at(caFiles.nextIntermediate)), readText(at(caFiles.bundle)), new Date())
  if (problem !== undefined) {
    throw new CaDirectoryError({ message: `${at(caFiles.nextIntermediate)} leads to no root of ${at(caFiles.bundle)} (${problem}): the bundle must hold ${caFiles.root} and ${caFiles.previousRoot} first` })
  }
  if (existsSync(at(caFiles.nextIntermediateKey))) renameSync(at(caFiles.nextIntermediateKey), at(caFiles.intermediateKey))
  else if (!keyMatches(readText(at(caFiles.intermediateKey)), new X509Certificate(readText(at(caFiles.nextIntermediate))))) {
    throw new CaDirectoryError({ message: `${at(caFiles.nextIntermediate)} waits without its key (neither ${caFiles.nextIntermediateKey} nor ${caFiles.intermediateKey} is it)` })
  }
  renameSync(at(caFiles.nextIntermediate), at(caFiles.intermediate))
}

/** Refuses what would sign under the new root, or drop the old one, while the intermediate in service is the old root's. */
const refuseBeforeSwitch = (dir: string): void => {
  if (existsSync(join(dir, caFiles.nextIntermediate))) {
    throw new CaDirectoryError({ message: `${dir} is mid-rotation, its intermediate in service is under the previous root: ca switch-intermediate first (once every sidecar holds the two-root bundle)` })
  }
}

/**
 * A new intermediate under the current root (the yearly renewal, or after the intermediate's key
 * was exposed): the root and the bundle stay, so nothing else changes; the issuer picks it up
 * (`--ca-reload-interval`) and leaves signed from then on chain to it.
 */
export const renewIntermediate = async (options: { readonly dir: string } & CaLifetimes): Promise<void> => {
  const at = (name: string) => join(options.dir, name)
  if (!existsSync(at(caFiles.root)) || !existsSync(at(caFiles.rootKey))) throw new CaDirectoryError({ message: `${options.dir} holds no root (ca init first)` })
  refuseStoppedRotation(options.dir)
  refuseBeforeSwitch(options.dir)
  const root = { certificatePem: readText(at(caFiles.root)), privateKeyPem: readText(at(caFiles.rootKey)) }
  if (!keyMatches(root.privateKeyPem, new X509Certificate(root.certificatePem))) throw new CaDirectoryError({ message: `${at(caFiles.rootKey)} is not the key of ${at(caFiles.root)}` })
  const trustDomain = trustDomainOf(new X509Certificate(root.certificatePem))
  const stamp = new Date().toISOString().slice(0, 10)
  const intermediate = await createIntermediateCa(root, {
    commonName: ["iip-mesh intermediate", trustDomain, stamp].filter((part) => part !== undefined).join(" "),
    ...(trustDomain === undefined ? {} : { trustDomain }),
    lifetimeMs: options.intermediateLifetimeMs ?? 365 * day
  })
  writeAtomically(options.dir, caFiles.intermediateKey, intermediate.privateKeyPem, 0o600)
  writeAtomically(options.dir, caFiles.intermediate, intermediate.certificatePem, 0o644)
}

/** Ends a rotation: the bundle holds the current root only, the previous root's files are removed. */
export const finishRotation = (options: { readonly dir: string }): void => {
  const at = (name: string) => join(options.dir, name)
  if (!existsSync(at(caFiles.previousRoot))) throw new CaDirectoryError({ message: `no rotation in progress in ${options.dir}` })
  refuseStoppedRotation(options.dir)
  refuseBeforeSwitch(options.dir)
  writeAtomically(options.dir, caFiles.bundle, readText(at(caFiles.root)), 0o644)
  rmSync(at(caFiles.previousRoot))
  rmSync(at(caFiles.previousRootKey), { force: true })
}

/** What an issuer signs with: the intermediate, the bundle it hands out, and the trust domain it names. */
export interface IssuingCa {
  readonly intermediate: CertifiedKey
  readonly trustBundlePem: string
  /** From the intermediate's `spiffe://<td>` name, when it has one. */
  readonly trustDomain: string | undefined
}

/**
 * Reads the intermediate and the bundle from `dir` (the ca directory, or a Kubernetes Secret
 * mounted as files with the same names) and checks that the intermediate leads to a bundle root
 * and is valid now: an issuer with a broken CA must not start.
 */
export const loadIssuingCa = (dir: string, now = new Date()): IssuingCa => {
  const certificatePem = readText(join(dir, caFiles.intermediate))
  const privateKeyPem = readText(join(dir, caFiles.intermediateKey))
  const trustBundlePem = readText(join(dir, caFiles.bundle))
  if (certificatesOfPem(certificatePem).length !== 1) throw new CaDirectoryError({ message: `${join(dir, caFiles.intermediate)} must hold exactly one certificate` })
  const problem = chainProblem(certificatePem, trustBundlePem, now)
  if (problem !== undefined) throw new CaDirectoryError({ message: `intermediate in ${dir} does not verify against its bundle: ${problem}` })
  const certificate = new X509Certificate(certificatePem)
  if (!keyMatches(privateKeyPem, certificate)) throw new CaDirectoryError({ message: `${join(dir, caFiles.intermediateKey)} is not the key of ${join(dir, caFiles.intermediate)}` })
  return { intermediate: { certificatePem, privateKeyPem }, trustBundlePem, trustDomain: trustDomainOf(certificate) }
}
