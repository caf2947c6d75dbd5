// An IIP server and client in this process over mutual TLS 1.3 with SPIFFE identities, as between
// two sidecars (A calls, B serves), for the tests of what the TLS read path does with memory
// (tls-leased-reads, tls-read-integrity): the credentials, the server's TLS options and a client
// that checks it reached B.
import * as tls from "node:tls"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { IipClient } from "../../src/iip/client.ts"
import type { IipServer } from "../../src/iip/server.ts"
import type { ServerTlsOptions } from "../../src/iip/tls.ts"
import type { Cleanup } from "./iipRaw.ts"
import { makeTestPki } from "./testPki.ts"

export const A = "spiffe://iip-mesh.local/svc/a"
export const B = "spiffe://iip-mesh.local/svc/b"

export interface MtlsPair {
  readonly client: WorkloadCredentials
  readonly server: WorkloadCredentials
}

/** A's and B's credentials from one test CA. */
export const makeMtlsPair = async (): Promise<MtlsPair> => {
  const pki = await makeTestPki("mesh")
  return { client: await pki.credentials(A), server: await pki.credentials(B) }
}

/** B's TLS options: client certificates required, the peer named by its SPIFFE ID. */
export const serverTls = (pair: MtlsPair, acceptPlain = false): ServerTlsOptions => ({
  credentials: { key: pair.server.privateKeyPem, cert: pair.server.certificateChainPem, ca: pair.server.trustBundlePem },
  requireClientCertificate: true,
  acceptPlain,
  identifyPeer: (certificate) => spiffeIdOfCertificate(certificate)?.text ?? { reason: "peer_identity", message: "no SPIFFE ID" }
})

/** A's client to `server` on one connection, uncompressed, refusing any peer but B; closed at cleanup. */
export const mtlsClient = (pair: MtlsPair, server: IipServer, cleanup: Cleanup): IipClient => {
  const context = tls.createSecureContext({ key: pair.client.privateKeyPem, cert: pair.client.certificateChainPem, ca: pair.client.trustBundlePem })
  const client = new IipClient({
    host: "127.0.0.1",
    port: server.address.port,
    maxConnections: 1,
    compression: false,
    log: () => {},
    tls: { secureContext: () => context, requireAlpn: true, checkPeer: (certificate) => (spiffeIdOfCertificate(certificate)?.text === B ? undefined : { reason: "peer_identity", message: "not B" }) }
  })
  cleanup.add(() => client.close())
  return client
}
