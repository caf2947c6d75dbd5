// `iip-mesh ca init|renew-intermediate|rotate|switch-intermediate|finish-rotation --dir D`: the
// mesh's offline CA (src/identity/caDirectory.ts). Run it on a machine that keeps the root key; give
// the issuer only the intermediate and the bundle (deploy/README.md shows the Kubernetes Secret).
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Command, Flag } from "effect/cli"
import { join } from "node:path"
import { messageOf } from "../iip/log.ts"
import { caFiles, finishRotation, initCa, renewIntermediate, rotateCa, switchIntermediate } from "../identity/caDirectory.ts"
import { defaultTrustDomain } from "../identity/spiffe.ts"

const dir = Flag.String("dir").pipe(Flag.withDescription("the CA directory (created 0700; keys are written 0600)"))
const trustDomain = Flag.String("trust-domain").pipe(Flag.withDescription(`the mesh's SPIFFE trust domain (default ${defaultTrustDomain})`), Flag.withDefault(defaultTrustDomain))
const intermediateDays = Flag.Int("intermediate-days").pipe(Flag.withDescription("the intermediate's lifetime in days (default 365)"), Flag.withDefault(365))
const rootDays = Flag.Int("root-days").pipe(Flag.withDescription("the root's lifetime in days (default 3650)"), Flag.withDefault(3650))

const failLine = (command: string) => (error: unknown) =>
  Effect.sync(() => {
    process.stderr.write(`iip-mesh ca ${command}: ${messageOf(error)}\n`)
    process.exitCode = 1
  })

const days = (count: number) => Math.max(1, Math.min(count, 36_500)) * 86_400_000

const written = (directory: string) =>
  Console.log(
    [
      `wrote ${join(directory, caFiles.root)} and ${join(directory, caFiles.rootKey)} (keep this key offline)`,
      `wrote ${join(directory, caFiles.intermediate)} and ${join(directory, caFiles.intermediateKey)} (the issuer's Secret)`,
      `wrote ${join(directory, caFiles.bundle)} (the trust bundle every sidecar gets)`
    ].join("\n")
  )

const init = Command.make("init", { dir, trustDomain, intermediateDays, rootDays }, (input) =>
  Effect.tryPromise({
    try: () => initCa({ dir: input.dir, trustDomain: input.trustDomain, rootLifetimeMs: days(input.rootDays), intermediateLifetimeMs: days(input.intermediateDays) }),
    catch: (error) => error
  }).pipe(Effect.andThen(written(input.dir)), Effect.catch(failLine("init")))
).pipe(Command.withDescription("Create a new mesh's root, intermediate and trust bundle"))

const rotateTrustDomain = Flag.String("trust-domain").pipe(Flag.withDescription("the mesh's SPIFFE trust domain (default: the current root's; another is refused)"), Flag.optional)

/** What each file rotate writes is, printed as it lands: a rotate that dies shows how far it got (run it again to finish). */
const rotateWrote: Record<string, string> = {
  [caFiles.previousRootKey]: "the current root's key, kept for the rotation",
  [caFiles.previousRoot]: "the current root, kept for the rotation",
  [caFiles.rootKey]: "the new root's key; keep it offline",
  [caFiles.root]: "the new root",
  [caFiles.nextIntermediateKey]: "the new root's intermediate's key",
  [caFiles.nextIntermediate]: "the new root's intermediate: not in service yet, the issuer keeps signing under the previous root",
  [caFiles.bundle]: "the new and the previous root; publish it: the issuer's Secret, the sidecars' bundle"
}

const rotate = Command.make("rotate", { dir, trustDomain: rotateTrustDomain, intermediateDays, rootDays }, (input) =>
  Effect.tryPromise({
    try: () =>
      rotateCa({
        dir: input.dir,
        ...(Option.isSome(input.trustDomain) ? { trustDomain: input.trustDomain.value } : {}),
        rootLifetimeMs: days(input.rootDays),
        intermediateLifetimeMs: days(input.intermediateDays),
        written: (name) => process.stdout.write(`wrote ${join(input.dir, name)} (${rotateWrote[name] ?? name})\n`)
      }),
    catch: (error) => error
  }).pipe(
    Effect.andThen((outcome) => Console.log(
      [
        ...(outcome === "resumed" ? ["finished the rotation that had stopped midway (the files above are what it still lacked)"] : []),
        `once every sidecar holds the two-root bundle (iip_mesh_trust_bundle_roots{state="valid"} 2), run ca switch-intermediate`
      ].join("\n")
    )),
    Effect.catch(failLine("rotate"))
  )
).pipe(Command.withDescription("Start a root rotation (or finish one that stopped midway): a new root, a bundle with both roots, the new root's intermediate set aside"))

const switchNext = Command.make("switch-intermediate", { dir }, (input) =>
  Effect.try({ try: () => switchIntermediate({ dir: input.dir }), catch: (error) => error }).pipe(
    Effect.andThen(Console.log(
      `${join(input.dir, caFiles.intermediate)} is the new root's intermediate (the issuer's Secret); after every leaf under the previous root has expired, run ca finish-rotation`
    )),
    Effect.catch(failLine("switch-intermediate"))
  )
).pipe(Command.withDescription("Rotation, second step (once every sidecar holds the two-root bundle): sign under the new root"))

const renew = Command.make("renew-intermediate", { dir, intermediateDays }, (input) =>
  Effect.tryPromise({ try: () => renewIntermediate({ dir: input.dir, intermediateLifetimeMs: days(input.intermediateDays) }), catch: (error) => error }).pipe(
    Effect.andThen(Console.log(`wrote ${join(input.dir, caFiles.intermediate)} and ${join(input.dir, caFiles.intermediateKey)} under the current root (the issuer's Secret)`)),
    Effect.catch(failLine("renew-intermediate"))
  )
).pipe(Command.withDescription("Issue a new intermediate under the current root; the root and the bundle stay"))

const finish = Command.make("finish-rotation", { dir }, (input) =>
  Effect.try({ try: () => finishRotation({ dir: input.dir }), catch: (error) => error }).pipe(
    Effect.andThen(Console.log(`${join(input.dir, caFiles.bundle)} holds the current root only; the previous root's files are removed`)),
    Effect.catch(failLine("finish-rotation"))
  )
).pipe(Command.withDescription("End a root rotation: drop the previous root from the bundle"))

export const ca = Command.make("ca").pipe(
  Command.withDescription("The mesh's certificate authority: init, renew-intermediate, rotate, switch-intermediate, finish-rotation"),
  Command.withSubcommands([init, renew, rotate, switchNext, finish])
)
