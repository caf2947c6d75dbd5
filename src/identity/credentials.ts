// What a sidecar holds to speak mTLS: its in-memory key, its certificate chain and the trust
// bundle, as one value that changes on every renewal or root rotation. The identity client (which
// obtains and renews them) produces it; the TLS transport consumes it, building a new secure
// context for new connections while established ones keep running.

/** One generation of a workload's credentials. Never written to disk. */
export interface WorkloadCredentials {
  readonly spiffeId: string
  /** PKCS#8 PEM; lives only in this process's memory. */
  readonly privateKeyPem: string
  /** The leaf first, then the intermediates up to (not including) a root. */
  readonly certificateChainPem: string
  /** One or two roots (two while a root is being rotated). */
  readonly trustBundlePem: string
  readonly notAfter: Date
}

/** The current credentials and a way to hear about the next ones. */
export interface CredentialSource {
  readonly current: () => WorkloadCredentials
  /** Called with each new generation; returns the unsubscribe function. */
  readonly subscribe: (listener: (credentials: WorkloadCredentials) => void) => () => void
}

/**
 * A source whose credentials change only when `update` is called (the identity client, tests, fixed
 * files). `update` hands the new generation to every listener, whatever one of them throws, and
 * returns what they threw: one listener's failure must neither keep the others on the old
 * credentials nor end the renewal that called it (whose certificate would then expire).
 */
export const makeCredentialHolder = (initial: WorkloadCredentials): CredentialSource & { readonly update: (next: WorkloadCredentials) => Array<unknown> } => {
  let current = initial
  const listeners = new Set<(credentials: WorkloadCredentials) => void>()
  return {
    current: () => current,
    subscribe: (listener) => {
      listeners.add(listener)
      return () => void listeners.delete(listener)
    },
    update: (next) => {
      current = next
      const failures: Array<unknown> = []
      for (const listener of listeners) {
        try {
          listener(next)
        } catch (failure) {
          failures.push(failure)
        }
      }
      return failures
    }
  }
}
