// Hostile certificate requests at readCertificateRequest (what the issuer and the development
// signer parse from a sidecar): whatever the bytes, the answer is a parsed request or a
// RequestMalformed with a reason, never another error thrown from inside the ASN.1 parser.
import "reflect-metadata"
import * as x509 from "@peculiar/x509"
import { webcrypto } from "node:crypto"
import { describe, expect, it } from "vitest"
import { generateKeyPair } from "../../src/identity/certificates.ts"
import { createCertificateRequest, readCertificateRequest, RequestMalformed } from "../../src/identity/certificateRequest.ts"
import { prng } from "../helpers/prng.ts"

const pemOf = (der: Buffer) => `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`

/** The error readCertificateRequest rejects with, or "parsed". */
const outcome = (pem: string): Promise<unknown> => readCertificateRequest(pem).then(() => "parsed", (error: unknown) => error)

describe("readCertificateRequest on hostile input", () => {
  it("a request whose key's curve parameters do not parse (found by mutation) is RequestMalformed, not an AsnSchemaValidationError", async () => {
    // A P-256 CSR for spiffe://td/svc/a with one byte of its SubjectPublicKeyInfo's curve OID changed (06 08 -> 45 08).
    const pem = `-----BEGIN CERTIFICATE REQUEST-----
MIHqMIGRAgEAMAAwWTATBgcqhkjOPQIBRQgqhkjOPQMBBwNCAASFQuoagKL3I3Um45B8WVeU91WONX24KigOmLg5xZm6aSOqUcQxerTyKwyfpmyjyQRPYmAylaxqL6pN11PPzGMHoC8wLQYJKoZIhvcNAQkOMSAwHjAcBgNVHREEFTAThhFzcGlmZmU6Ly90ZC9zdmMvYTAKBggqhkjO9QQDAgNIADBFAiBdeygjmUo2Dtf6cB/L5m/41/rHR+6b1ek3P6D31F+drgIhALsYq8kN+wdv+WM9B6nos5/807ZgucHyKpMJG8q9xEx2
-----END CERTIFICATE REQUEST-----
`
    expect(await outcome(pem)).toBeInstanceOf(RequestMalformed)
  })

  it("1,000 requests with 1-4 random bytes changed each: every one parses or is RequestMalformed", async () => {
    const pair = await generateKeyPair()
    const pem = await createCertificateRequest(pair.keys, "spiffe://td/svc/a")
    const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s/g, ""), "base64")
    const random = prng(15)
    const strays: Array<string> = []
    for (let i = 0; i < 1_000; i++) {
      const mutated = Buffer.from(der)
      for (let n = random.int(1, 4); n > 0; n--) mutated[random.int(0, mutated.length - 1)] = random.int(0, 255)
      const result = await outcome(pemOf(mutated))
      if (result !== "parsed" && !(result instanceof RequestMalformed)) strays.push(`${pemOf(mutated)}${String(result)}`)
    }
    expect(strays).toStrictEqual([])
  })

  // Guards (wave 2 probe of the issuer: these held): a request the issuer does not take says why.
  const signedBy = async (algorithm: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | { name: "Ed25519" }, names: Array<x509.JsonGeneralName>) => {
    const keys = (await webcrypto.subtle.generateKey(algorithm, false, ["sign", "verify"])) as webcrypto.CryptoKeyPair
    const signingAlgorithm = "namedCurve" in algorithm ? { name: "ECDSA", hash: algorithm.namedCurve === "P-384" ? "SHA-384" : "SHA-256" } : algorithm
    const extensions = names.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(names)]
    return (await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm, extensions })).toString("pem")
  }

  it.each([
    ["RSA 2048", { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 }],
    ["ECDSA P-384", { name: "ECDSA", namedCurve: "P-384" }],
    ["Ed25519", { name: "Ed25519" }]
  ] as const)("a request over a %s key is refused naming the key kind taken", async (_kind, algorithm) => {
    expect(await outcome(await signedBy(algorithm, []))).toStrictEqual(new RequestMalformed({ reason: "certificate request key is not ECDSA P-256" }))
  })

  it("a request naming 150 DNS names, or two URIs, is refused: one URI (a SPIFFE ID) is all it may name", async () => {
    const p256 = { name: "ECDSA", namedCurve: "P-256" } as const
    const dns = Array.from({ length: 150 }, (_, i) => ({ type: "dns" as const, value: `a${i}.example` }))
    expect(await outcome(await signedBy(p256, dns))).toStrictEqual(new RequestMalformed({ reason: "certificate request names a dns; only one URI (a SPIFFE ID) is taken" }))
    const two = [{ type: "url" as const, value: "spiffe://td/svc/a" }, { type: "url" as const, value: "spiffe://td/svc/b" }]
    expect(await outcome(await signedBy(p256, two))).toStrictEqual(new RequestMalformed({ reason: "certificate request names more than one identity" }))
  })

  it("text that is not one PEM request block (cut, not base64, another block, 8 KiB past the end) is refused before any parsing", async () => {
    const begin = "-----BEGIN CERTIFICATE REQUEST-----\n"
    const end = "\n-----END CERTIFICATE REQUEST-----\n"
    for (const pem of [begin + "A".repeat(8_000), `${begin}!!!!${end}`, `-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`, `${begin}${"=".repeat(3_000)}${end}${" ".repeat(4_000)}x`]) {
      expect(await outcome(pem)).toStrictEqual(new RequestMalformed({ reason: "certificate request is not one PEM CERTIFICATE REQUEST block" }))
    }
    expect(await outcome(`${begin}${"A".repeat(9_000)}${end}`)).toStrictEqual(new RequestMalformed({ reason: "certificate request larger than 8192 bytes" }))
  })
})
