// Test payloads that compress as JSON does (repeated keys, varying values), for the compression
// tests (test/protocol/compression.test.ts, test/iip/mesh-compression.test.ts).

/** `bytes` bytes of JSON-like text. */
export const jsonLike = (bytes: number): Buffer => {
  const parts: Array<string> = []
  let size = 0
  for (let i = 0; size < bytes; i++) {
    const item = JSON.stringify({ id: i, name: `item-${i}`, price: ((i * 37) % 1000) / 10, tags: ["a", "b"], ok: i % 2 === 0 })
    parts.push(item)
    size += item.length + 1
  }
  return Buffer.from(parts.join(",")).subarray(0, bytes)
}
