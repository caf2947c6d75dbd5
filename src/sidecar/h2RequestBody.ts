// A streamed request body of the outbound listener's h2c streams (outboundH2Call.ts), as the mesh
// session reads it (an AsyncIterable): the DATA views the connection hands over wait here, and each
// is given back to the caller's flow control (`taken`: H2Connection.consumed) only as the reader
// takes it, so a caller sends no faster than the far side reads: what waits here is at most the
// stream's receive window.

export class H2RequestBody implements AsyncIterable<Buffer> {
  private readonly chunks: Array<Buffer> = []
  private ended = false
  private failure: Error | undefined = undefined
  private wake: (() => void) | undefined = undefined
  private readonly taken: (bytes: number) => void
  /** Bytes at the queue's head given back already (pushTaken): not given back again as they are read. */
  private givenBack = 0

  constructor(taken: (bytes: number) => void) {
    this.taken = taken
  }

  push(chunk: Buffer): void {
    if (this.ended) return this.taken(chunk.length)
    this.chunks.push(chunk)
    this.notify()
  }

  /** A chunk its owner gave back to the flow control already (a held body's first part). */
  pushTaken(chunk: Buffer): void {
    this.givenBack += chunk.length
    this.push(chunk)
  }

  end(): void {
    if (this.ended) return
    this.ended = true
    this.notify()
  }

  /** The stream ended before its END_STREAM: the reader gets what is queued, then `error`. */
  fail(error: Error): void {
    if (this.ended) return
    this.ended = true
    this.failure = error
    this.notify()
  }

  /** Hands over what waits (given back to the flow control as it goes) to an owner that reads the rest itself. */
  takeQueued(): Array<Buffer> {
    const chunks = this.chunks.splice(0)
    for (const chunk of chunks) {
      const owed = chunk.length - this.givenBack
      this.givenBack = Math.max(0, -owed)
      if (owed > 0) this.taken(owed)
    }
    this.ended = true
    return chunks
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      const chunk = this.chunks.shift()
      if (chunk !== undefined) {
        const owed = chunk.length - this.givenBack
        this.givenBack = Math.max(0, -owed)
        if (owed > 0) this.taken(owed)
        yield chunk
        continue
      }
      if (this.failure !== undefined) throw this.failure
      if (this.ended) return
      await new Promise<void>((resolve) => (this.wake = resolve))
    }
  }

  private notify(): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
