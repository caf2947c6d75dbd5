// Back-pressure on the sidecar's writes (to the app, to the caller, across an upgrade): after a
// write that returned false, wait until the socket or stream takes more, or closes (then nothing
// more will be written, and the writer sees it destroyed).
import type { EventEmitter } from "node:events"
import type * as net from "node:net"
import { libuvQueued } from "../mux/libuvQueue.ts"

/** Resolves on the writable's next 'drain' or 'close', whichever comes first; both listeners leave. */
export const drainedOrClosed = (writable: EventEmitter): Promise<void> =>
  new Promise((resolve) => {
    const done = () => {
      writable.off("drain", done)
      writable.off("close", done)
      resolve()
    }
    writable.on("drain", done)
    writable.on("close", done)
  })

/**
 * What libuv has yet to hand the kernel of the chunk a socket is writing (Node keeps the handle's
 * `writeQueueSize` up to date but does not document it): it shrinks as a caller reads one large
 * write, where `writableLength` counts that chunk whole until all of it is sent.
 */
export const queuedInLibuv = (socket: net.Socket): number => libuvQueued(socket) ?? 0
