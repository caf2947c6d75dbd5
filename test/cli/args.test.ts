// The CLI's size arguments (src/cli/args.ts parseSize): binary units, bare bytes, and a clear
// error for anything else.
import { describe, expect, it } from "vitest"
import { parseSize } from "../../src/cli/args.ts"

describe("parseSize", () => {
  it("reads bytes and binary units, any case, with or without a space", () => {
    expect(parseSize("123")).toBe(123)
    expect(parseSize("64KiB")).toBe(65_536)
    expect(parseSize("1.5 MiB")).toBe(1_572_864)
    expect(parseSize("4gib")).toBe(4 * 2 ** 30)
    expect(parseSize("1TiB")).toBe(2 ** 40)
    expect(parseSize("0")).toBe(0)
  })

  it("refuses other units, negative and unsafe numbers", () => {
    for (const text of ["4GB", "-1", "lots", "", "1e3", "99999999999TiB"]) {
      expect(() => parseSize(text), text).toThrow(`expected a size like 4GiB, 512MiB or a number of bytes, got ${JSON.stringify(text)}`)
    }
  })
})
