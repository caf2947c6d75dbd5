// Pins parseRequestPath / parseQuery to Go's url.Parse / URL.Query() (iip-protocol.md §6.2): the
// routed and answered path is the percent-decoded URL.Path, the query is RawQuery, and a path Go
// refuses is kept raw with an empty query. Every expected value below was produced by Go 1.19
// (the reference's build) net/url on the same input.
import { describe, expect, it } from "vitest"
import { parseQuery, parseRequestPath, unescape } from "../../src/protocol/requestPath.ts"

/** [raw, URL.Path, URL.RawQuery]; Go accepts the URL. */
const accepted: ReadonlyArray<readonly [string, string, string]> = [
  // the verified vectors of §12.2
  ["/q?a=1&b=x%20y&a=2", "/q", "a=1&b=x%20y&a=2"],
  ["/ec%68o", "/echo", ""],
  ["echo", "echo", ""],
  // plain and percent-decoded paths
  ["/echo", "/echo", ""],
  ["/sys/new_channel", "/sys/new_channel", ""],
  ["/ec%68o?x=1", "/echo", "x=1"],
  ["/a%41", "/aA", ""],
  ["/%2F%2f", "///", ""],
  ["/a%2Fb", "/a/b", ""],
  ["/%25", "/%", ""],
  ["/%e4%b8%ad", "/中", ""],
  ["/中文?k=中", "/中文", "k=中"],
  ["/a+b?c+d=e+f", "/a+b", "c+d=e+f"], // "+" is a space only in the query
  ["/%20?%20=+%2B", "/ ", "%20=+%2B"],
  ["/a b", "/a b", ""],
  ["/p/../q", "/p/../q", ""], // no dot-segment cleaning
  ["/p/./q", "/p/./q", ""],
  ["/a:b", "/a:b", ""],
  ["a/b:c", "a/b:c", ""], // the colon is not in the first segment
  ["./a:b", "./a:b", ""],
  // query and fragment
  ["/a?", "/a", ""],
  ["/sys/new_channel?", "/sys/new_channel", ""],
  ["/a?b?c", "/a", "b?c"],
  ["/a?=v&k", "/a", "=v&k"],
  ["/a#frag", "/a", ""],
  ["/a?b#c", "/a", "b"],
  ["/a#b?c", "/a", ""],
  ["#x", "", ""],
  ["?x=1", "", "x=1"],
  ["?", "", ""],
  ["", "", ""],
  ["*", "*", ""],
  ["*?a", "*", "a"],
  // an authority is dropped from the path
  ["//host/p", "/p", ""],
  ["//host/p?x=1", "/p", "x=1"],
  ["//host", "", ""],
  ["//h:80/p", "/p", ""],
  ["//[::1]:80/p", "/p", ""],
  ["//@h/p", "/p", ""],
  ["//u@h/p", "/p", ""],
  ["///p", "///p", ""], // three slashes without a scheme: no authority
  ["////p", "////p", ""],
  // with a scheme
  ["http://h/x?y=1", "/x", "y=1"],
  ["HTTP://H/X", "/X", ""],
  ["http:///x", "/x", ""],
  ["http://h", "", ""],
  ["https://u:p@h:8080/a/b?c=d", "/a/b", "c=d"],
  // scheme followed by a rootless path: opaque, Path stays empty
  ["a:b", "", ""],
  ["a:b?x=1", "", "x=1"],
  ["a:b/c", "", ""],
  ["mailto:x@y", "", ""]
]

/** Inputs Go's url.Parse refuses: the reference keeps the raw path and an empty query. */
const refused: ReadonlyArray<readonly [string, string]> = [
  ["/bad%zz", "malformed escape"],
  ["/bad%zz?a=1", "malformed escape before a query"],
  ["/a%", "escape cut at the end"],
  ["/a%4", "escape cut at the end"],
  ["/a%2", "escape cut at the end"],
  ["/a#%zz", "malformed escape in the fragment"],
  ["/a\u0001b", "control character"],
  ["/a\u007fb", "DEL"],
  ["/a\tb", "tab"],
  ["\u0001", "control character only"],
  ["1a:b", "colon in the first segment (a digit cannot start a scheme)"],
  ["+a:b/c", "colon in the first segment"],
  ["a b:c", "colon in the first segment"],
  [":x", "missing protocol scheme"],
  [":", "missing protocol scheme"]
]

describe("parseRequestPath", () => {
  it.each(accepted)("%j -> path %j, query %j", (raw, path, rawQuery) => {
    expect(parseRequestPath(raw)).toStrictEqual({ path, rawQuery })
  })

  it.each(refused)("%j is refused by url.Parse (%s): raw kept, empty query", (raw) => {
    expect(parseRequestPath(raw)).toStrictEqual({ path: raw, rawQuery: "" })
  })

  it("a long query does not change the path the answer carries (§2.2)", () => {
    const raw = "/echo?pad=" + "x".repeat(3000)
    expect(parseRequestPath(raw)).toStrictEqual({ path: "/echo", rawQuery: "pad=" + "x".repeat(3000) })
  })
})

describe("parseQuery (URL.Query(), errors ignored)", () => {
  const query = (raw: string) => Object.fromEntries(parseQuery(raw))

  it.each([
    ["a=1&b=x%20y&a=2", { a: ["1", "2"], b: ["x y"] }],
    ["x=1", { x: ["1"] }],
    ["b?c", { "b?c": [""] }],
    ["=v&k", { "": ["v"], k: [""] }],
    ["c+d=e+f", { "c d": ["e f"] }],
    ["k=中", { k: ["中"] }],
    ["%41=%42", { A: ["B"] }],
    ["a=%zz&b=1", { b: ["1"] }], // a bad escape drops that pair only
    ["a;b=1&c=2", { c: ["2"] }], // a semicolon drops that pair only
    ["&&a=1&&", { a: ["1"] }],
    ["a&a=&a=1", { a: ["", "", "1"] }],
    ["a=1=2", { a: ["1=2"] }],
    ["%20=+%2B", { " ": [" +"] }],
    ["", {}]
  ] as const)("%j", (raw, expected) => {
    expect(query(raw)).toStrictEqual(expected)
  })

  it("keeps the order of repeated values and of first appearance of keys", () => {
    expect([...parseQuery("b=1&a=2&b=3")]).toStrictEqual([
      ["b", ["1", "3"]],
      ["a", ["2"]]
    ])
  })
})

describe("unescape", () => {
  it("decodes %XX in either case, keeps + outside queries", () => {
    expect(unescape("%2f%2F+a", false)).toBe("//+a")
    expect(unescape("%2f%2F+a", true)).toBe("// a")
    expect(unescape("plain", false)).toBe("plain")
  })

  it.each(["%", "%4", "%zz", "a%g1", "%%41"])("refuses the malformed escape %j", (s) => {
    expect(unescape(s, false)).toBeUndefined()
    expect(unescape(s, true)).toBeUndefined()
  })
})
