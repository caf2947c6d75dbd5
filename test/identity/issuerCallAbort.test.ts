// A call to the issuer whose caller goes (the identity client's scope closing: the sidecar stops)
// while the --trust-bundle file is still being read, off the event loop: the issuer is never
// dialled. The requests made are counted where they are made, node:https's request.
import { describe, expect, it, vi } from "vitest"
import { issuerTrustBundle } from "../../src/identity/signers.ts"

const made = vi.hoisted(() => ({ requests: 0 }))
vi.mock("node:https", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:https")>()
  const request = ((...args: Parameters<typeof actual.request>) => {
    made.requests++
    return actual.request(...args)
  }) as typeof actual.request
  return { ...actual, default: { ...actual, request }, request }
})

describe("a call to the issuer", () => {
  it("whose caller goes while the trust bundle is read dials nobody, and fails as aborted", async () => {
    let read!: (pem: string) => void
    // Port 1 on loopback: nothing listens, a dial there fails at once.
    const fetch = issuerTrustBundle({ issuerUrl: "https://127.0.0.1:1", trustDomain: "abort.mesh", trustBundle: () => new Promise<string>((resolve) => (read = resolve)) })
    const left = new AbortController()
    const fetched = fetch(left.signal).then(() => "answered", (error: Error) => error.name)
    left.abort()
    read("")
    expect(await fetched).toBe("AbortError")
    // Before, the request was made once the read ended, and destroyed at once: a connection to the
    // issuer opened after the sidecar stopped.
    expect(made.requests).toBe(0)
    // The same call with its caller still there does dial (what is counted is a dial).
    const stayed = await issuerTrustBundle({ issuerUrl: "https://127.0.0.1:1", trustDomain: "abort.mesh", trustBundle: async () => "" })(new AbortController().signal).then(() => "answered", (error: NodeJS.ErrnoException) => error.code)
    expect([stayed, made.requests]).toStrictEqual(["ECONNREFUSED", 1])
  })
})
