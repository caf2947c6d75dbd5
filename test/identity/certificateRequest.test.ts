// Hostile certificate requests at readCertificateRequest (what the issuer and the development
// signer parse from a sidecar): whatever the bytes, the answer is a parsed request or a
// RequestMalformed with a reason, never another error thrown from inside the ASN.1 parser.
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
})
