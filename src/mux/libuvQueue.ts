// The one place that reads Node's undocumented `_handle.writeQueueSize`: what libuv has yet to hand
// the kernel of a stream's write under way. It shrinks as the peer (or a pipe's reader) takes bytes,
// where `writableLength` counts a large write whole until all of it is sent. Used by the mesh
// writer (writer.ts: timeouts.ts's progress), the sidecar's answer and tunnel writes (drained.ts)
// and the bounded standard streams (iip/outputLines.ts). If a Node release drops the field, every
// caller sees `undefined` here and falls back to what it does without it.

/** libuv's queued bytes for `stream`'s handle, or undefined where it has none (a WebSocket's stream, a file). */
export const libuvQueued = (stream: object): number | undefined => {
  const size = (stream as { readonly _handle?: { readonly writeQueueSize?: unknown } | null })._handle?.writeQueueSize
  return typeof size === "number" ? size : undefined
}
