// The Kubernetes requests' TLS (src/discovery/kubernetesGet.ts) against the fake API server
// (test/discovery/fakeKubeApi.ts) behind a TLS front on 127.0.0.1 (port 0) whose certificate the
// test rotates: the kubeconfig's CA file is read for each list and watch, as the API client's own
// list read it, so a CA rotated in place (in a pod, ca.crt is rewritten during a cluster CA
// rotation) is trusted from the next request on, not only after a restart.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import tls from "node:tls"
import { KubeConfig } from "@kubernetes/client-node"
import { afterEach, describe, expect, it } from "vitest"
import { kubernetesSource } from "../../src/discovery/kubernetesSource.ts"
import type { EndpointUpdate } from "../../src/discovery/types.ts"
import { ipServerCertificate, makeTestPki } from "../support/testPki.ts"
import { endpointSlice, FakeKubeApi } from "./fakeKubeApi.ts"
import { Recorder } from "./recorder.ts"

const stops: Array<() => void | Promise<void>> = []
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop()
})

/** A TLS front for `port` with `identity`; `rotate` serves another certificate to new connections and cuts the open ones. */
const tlsFront = async (port: number, identity: { readonly key: string; readonly cert: string }) => {
  const sockets = new Set<net.Socket>()
  const server = tls.createServer(identity, (socket) => {
    const upstream = net.connect({ host: "127.0.0.1", port })
    for (const s of [socket, upstream]) {
      sockets.add(s)
      s.on("error", () => {})
      s.once("close", () => {
        sockets.delete(s)
        socket.destroy()
        upstream.destroy()
      })
    }
    socket.pipe(upstream).pipe(socket)
  })
  server.on("tlsClientError", () => {})
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const cut = () => {
    for (const socket of sockets) socket.destroy()
  }
  stops.push(async () => {
    cut()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    port: (server.address() as net.AddressInfo).port,
    rotate: (next: { readonly key: string; readonly cert: string }) => {
      server.setSecureContext(next)
      cut()
    }
  }
}

describe("TLS credentials read for each request", () => {
  it("a CA file rotated in place is read again: after the server's certificate moves to the new CA, the next watch trusts it and changes arrive", async () => {
    const api = await FakeKubeApi.start("shop")
    stops.push(() => api.close())
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const [before, after] = await Promise.all([makeTestPki("ca-before"), makeTestPki("ca-after")])
    const front = await tlsFront(api.port, await ipServerCertificate(before, "127.0.0.1"))
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-kube-ca-"))
    stops.push(() => rmSync(dir, { recursive: true, force: true }))
    const caFile = join(dir, "ca.crt")
    writeFileSync(caFile, before.root.certificatePem)
    const kubeConfig = new KubeConfig()
    kubeConfig.loadFromOptions({
      clusters: [{ name: "fake", server: `https://127.0.0.1:${front.port}`, caFile }],
      users: [{ name: "mesh", token: "test-token" }],
      contexts: [{ name: "fake", cluster: "fake", user: "mesh", namespace: "shop" }],
      currentContext: "fake"
    })
    const updates = new Recorder<EndpointUpdate>()
    const failures = new Recorder<string>()
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig, retryMs: 20, maxRetryMs: 100, log: (event, fields) => event === "discovery.kubernetes-failed" && failures.push(String(fields["message"])) }).start(updates.push))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 1, { timeoutMs: 5000 })
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 5000 })
    expect(failures.items).toStrictEqual([])

    // The rotation: ca.crt first, then the server's certificate; the open watch is cut.
    writeFileSync(caFile, after.root.certificatePem)
    front.rotate(await ipServerCertificate(after, "127.0.0.1"))
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 2, { timeoutMs: 5000 }).catch((error: unknown) => {
      throw new Error(`${String(error)}; failures logged: ${failures.items.join(" | ")}`)
    })
  })
})
