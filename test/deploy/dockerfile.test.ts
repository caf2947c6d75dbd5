// deploy/docker, checked offline (issue 9): the Dockerfile's images can be built from this
// repository and run (dockerfileChecks.ts), the manifests run what the images hold, and each
// negative fixture under fixtures/docker/ fails the check that guards it.
import { readdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { describe, expect, it } from "vitest"
import type { IContainer } from "kubernetes-models/v1/Container"
import { checkDockerfile, type DockerCheckId, dockerCheckIds, type DockerProblem, isIgnored, parseDockerfile, parseDockerignore, productionPackages } from "./dockerfileChecks.ts"
import { containersOf, imageName, podTemplates, renderKustomization } from "./kube.ts"

const repo = resolve(import.meta.dirname, "../..")
const dockerfile = join(repo, "deploy/docker/Dockerfile")
const realIgnore = `${dockerfile}.dockerignore`
const fixturesDir = join(import.meta.dirname, "fixtures", "docker")

const format = (problems: ReadonlyArray<DockerProblem>) => problems.map((p) => `[${p.check}] ${p.where}: ${p.message}`).join("\n")

/** Each fixture: the checks it must fail (all of them, no others) and a phrase of the message. */
const fixtures: Record<string, { readonly fails: ReadonlyArray<DockerCheckId>; readonly says: RegExp }> = {
  "base-image": { fails: ["docker-base"], says: /FROM node:24: the base image is node:24-slim/ },
  "copy-missing": { fails: ["docker-copy"], says: /COPY lib: no such file or directory/ },
  "copy-ignored": { fails: ["docker-copy", "docker-imports"], says: /COPY src: left out of the context/ },
  "context-leak": { fails: ["docker-context"], says: /node_modules is sent to the builder/ },
  "root-user": { fails: ["docker-user"], says: /no USER: the image runs as root/ },
  "named-user": { fails: ["docker-user"], says: /USER node: give a numeric UID/ },
  "shell-entrypoint": { fails: ["docker-entrypoint"], says: /shell form runs \/bin\/sh as PID 1/ },
  "dev-deps": { fails: ["docker-deps"], says: /npm ci without --omit=dev/ },
  "missing-dist": { fails: ["docker-imports"], says: /bin\/iip-mesh\.js imports \.\.\/dist\/cli\/main\.js, which is not in the image/ },
  "dev-import": { fails: ["docker-imports"], says: /app\/main\.js imports yaml: yaml is not installed by npm ci --omit=dev/ }
}

/** A fixture is NAME.Dockerfile built from the repository (with its own NAME.Dockerfile.dockerignore or the real one), or a directory that is its own context. */
const fixtureInput = (name: string) => {
  const entries = readdirSync(fixturesDir, { withFileTypes: true })
  if (entries.some((e) => e.isDirectory() && e.name === name)) return { dockerfile: join(fixturesDir, name, "Dockerfile"), context: join(fixturesDir, name) }
  const own = entries.some((e) => e.name === `${name}.Dockerfile.dockerignore`)
  return { dockerfile: join(fixturesDir, `${name}.Dockerfile`), context: repo, ...(own ? {} : { ignoreFile: realIgnore }) }
}

describe("deploy/docker/Dockerfile", () => {
  const { problems, images } = checkDockerfile({ dockerfile, context: repo })

  it("passes every check: node:24-slim, COPY sources exist and are in the context, non-root, node as PID 1, production dependencies, imports all in the image", () => {
    expect(format(problems)).toBe("")
    expect([...images.keys()].sort()).toEqual(["services", "sidecar"])
  })

  it("the sidecar image holds the CLI and everything it imports; the services image the demo services and the production dependencies", () => {
    const sidecar = images.get("sidecar")!
    expect(sidecar.files.has("/app/bin/iip-mesh.js")).toBe(true)
    expect(sidecar.files.has("/app/dist/cli/main.js")).toBe(true)
    expect(sidecar.files.has("/app/dist/admin/dashboard.html")).toBe(true)
    expect([...sidecar.files.keys()].filter((path) => path.startsWith("/app/src/") || path.includes("/typescript/"))).toEqual([])
    const services = [...images.get("services")!.files.keys()].filter((path) => !path.startsWith("/app/node_modules/")).sort()
    expect(services).toEqual([
      "/app/package.json",
      "/app/services/catalog.ts",
      "/app/services/catalogRpcs.ts",
      "/app/services/inventory.ts",
      "/app/services/inventoryGrpc.ts",
      "/app/services/liveRelay.ts",
      "/app/services/pricing.ts",
      "/app/services/serve.ts",
      "/app/services/storefront.ts"
    ])
    // What the demo services import comes with npm ci --omit=dev: grpc-js (inventory, the storefront's
    // client) and ws (pricing's /live, the storefront's relay) as effect does (the imports check relies on it).
    const production = productionPackages(join(repo, "package-lock.json"))
    for (const name of ["@grpc/grpc-js", "ws", "effect"]) expect(production.has(name), name).toBe(true)
  })

  it("node runs with the heap sizing, V8 thread and malloc settings of bin/iip-mesh.js's first line, in the image as in package.json's scripts", () => {
    const shebang = readFileSync(join(repo, "bin/iip-mesh.js"), "utf8").split("\n")[0]!
    const words = shebang.replace(/^#!\/usr\/bin\/env -S /, "").split(" ").filter((f) => f !== "")
    const node = words.indexOf("node")
    const env = words.slice(0, node)
    const flags = words.slice(node + 1)
    expect(flags).toContain("--max-semi-space-size=2")
    expect(flags).toContain("--v8-pool-size=1")
    expect(env).toEqual(["MALLOC_ARENA_MAX=2"])
    const sidecar = parseDockerfile(readFileSync(dockerfile, "utf8")).find((s) => s.name === "sidecar")!
    const entrypoint = sidecar.instructions.find((i) => i.keyword === "ENTRYPOINT")!
    expect(entrypoint.exec).toEqual(["node", ...flags, "bin/iip-mesh.js"])
    expect(sidecar.instructions.filter((i) => i.keyword === "ENV").map((i) => i.text)).toEqual(env)
    const scripts = (JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts
    for (const name of ["start", "iip-mesh"]) expect(scripts[name], name).toContain(`${env.join(" ")} node ${flags.join(" ")} dist/cli/main.js`)
  })

  it("the context is an allow-list: tests, node_modules and local files stay out", () => {
    const patterns = parseDockerignore(readFileSync(realIgnore, "utf8"))
    for (const path of ["src/cli/main.ts", "bin/iip-mesh.js", "tsconfig.build.json", "scripts/build.ts", "scripts/nativeTrim.ts", "native/malloc_trim.c", "services/serve.ts", "package-lock.json"]) expect(isIgnored(path, patterns), path).toBe(false)
    for (const path of ["node_modules/effect/package.json", ".git/config", "test/deploy/kube.ts", "deploy/README.md", ".tmp/x", "README.md"]) expect(isIgnored(path, patterns), path).toBe(true)
  })

  it("the manifests run what the images hold: `sidecar` or `identity` in the sidecar image, a service script that is in the services image", async () => {
    const objects = await renderKustomization(join(repo, "deploy/kubernetes/overlays/demo"))
    const ours: Array<IContainer> = podTemplates(objects).flatMap((pod) => containersOf(pod).map(({ container }) => container)).filter((c) => imageName(c.image ?? "").startsWith("iip-mesh-"))
    expect(ours.length).toBe(11)
    expect(ours.filter((c) => c.args?.[0] === "identity").map((c) => c.name)).toStrictEqual(["issuer"])
    for (const container of ours) {
      expect(container.command, container.name).toBeUndefined()
      if (imageName(container.image!) === "iip-mesh-sidecar") expect(["sidecar", "identity"]).toContain(container.args?.[0])
      else {
        expect(imageName(container.image!)).toBe("iip-mesh-demo-services")
        expect(images.get("services")!.files.has(`/app/${container.args?.[0]}`), container.args?.[0]).toBe(true)
      }
    }
  })
})

describe("Dockerfile negative fixtures", () => {
  it("every fixture is listed, and every check has a fixture", () => {
    const names = readdirSync(fixturesDir, { withFileTypes: true })
      .filter((e) => e.isDirectory() || e.name.endsWith(".Dockerfile"))
      .map((e) => e.name.replace(/\.Dockerfile$/, ""))
      .sort()
    expect(names).toEqual(Object.keys(fixtures).sort())
    const covered = new Set(Object.values(fixtures).flatMap((f) => f.fails))
    expect(dockerCheckIds.filter((id) => !covered.has(id))).toEqual([])
  })

  it.each(Object.entries(fixtures))("%s fails what it should", (name, expected) => {
    const { problems } = checkDockerfile(fixtureInput(name))
    expect([...new Set(problems.map((p) => p.check))].sort(), format(problems)).toEqual([...expected.fails].sort())
    expect(problems.some((p) => expected.says.test(p.message)), format(problems)).toBe(true)
  })
})
