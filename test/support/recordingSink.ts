// A stand-in for the socket under a PacketWriter (src/mux/writer.ts) in the writer's tests: it keeps
// every write and holds each write's callback until the test says the socket took it.
export const recordingSink = () => {
  const writes: Array<Buffer> = []
  const callbacks: Array<() => void> = []
  return {
    wire: () => Buffer.concat(writes),
    /** Writes whose callback waits: the socket has not taken them yet. */
    waiting: () => callbacks.length,
    taken: () => callbacks.splice(0).forEach((cb) => cb()),
    sink: {
      write: (chunk: Uint8Array, callback?: () => void) => {
        writes.push(Buffer.from(chunk))
        if (callback !== undefined) callbacks.push(callback)
        return true
      },
      cork: () => {},
      uncork: () => {},
      writableLength: 0,
      once: () => undefined
    }
  }
}
