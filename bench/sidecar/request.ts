// The one request every row of the sidecar bench sends, from the Node load generator and from wrk
// alike: POST /echo with a 1 KiB body the app echoes back (Host: echo when it goes through a proxy,
// the service name sidecar A routes on).
export const HOST = "127.0.0.1"
export const PATH = "/echo"
export const PAYLOAD_BYTES = 1024
/** The Host header a proxied request carries: the service sidecar A resolves; nginx and haproxy ignore it. */
export const SERVICE_HOST = "echo"

/** The body: fixed bytes (not zeros, so nothing along the way can shortcut them), the same in every run. */
export const payloadByte = (i: number): number => (i * 31 + 7) & 0xff

export const makePayload = (): Buffer => {
  const payload = Buffer.allocUnsafe(PAYLOAD_BYTES)
  for (let i = 0; i < PAYLOAD_BYTES; i++) payload[i] = payloadByte(i)
  return payload
}
