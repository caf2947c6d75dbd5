// UTF-8 measuring and writing for the short strings every packet carries (its path, mesh metadata
// keys and values such as `:status`): the packet encoder (packet.ts) and the envelope (mesh.ts).
// For a few ASCII bytes a loop in JS costs less than a call into Buffer's C++ (two per string:
// measure, write); anything longer or not ASCII goes to Buffer.
import { Buffer } from "node:buffer"

/** Strings up to this many UTF-16 units are tried as ASCII in JS. */
const SHORT = 64

/** `text`'s UTF-8 length. */
export const utf8Length = (text: string): number => {
  const length = text.length
  if (length <= SHORT) {
    let i = 0
    while (i < length && text.charCodeAt(i) < 0x80) i++
    if (i === length) return length
  }
  return Buffer.byteLength(text, "utf8")
}

/** Writes `text` as UTF-8 at `offset` (room for it is known); returns the bytes written. */
export const writeUtf8 = (out: Buffer, text: string, offset: number): number => {
  const length = text.length
  if (length <= SHORT) {
    let i = 0
    for (; i < length; i++) {
      const c = text.charCodeAt(i)
      if (c >= 0x80) break
      out[offset + i] = c
    }
    if (i === length) return length
  }
  return out.write(text, offset, "utf8")
}
