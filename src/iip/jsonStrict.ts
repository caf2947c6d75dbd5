// JSON.parse for configuration documents (the sidecar's config file, the routes and policy files
// as JSON): a key twice in one object is an error, as YAML makes it, instead of JSON.parse
// keeping the last silently (a setting written twice, the first one thought in force). The keys
// are checked after JSON.parse accepted the text, by one scan with an explicit stack (a document
// nested 100,000 deep does not recurse).
import * as Data from "effect/Data"

export class DuplicateKey extends Data.TaggedError("DuplicateKey")<{ readonly message: string }> {}

/** The first key that appears twice in one object of well-formed JSON `text`, decoded; undefined for none. */
const duplicateKeyOf = (text: string): string | undefined => {
  /** Per open object its keys so far; null for an array. */
  const stack: Array<Set<string> | null> = []
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === "{") stack.push(new Set())
    else if (c === "[") stack.push(null)
    else if (c === "}" || c === "]") stack.pop()
    else if (c === '"') {
      const start = i
      for (i++; text[i] !== '"'; i++) if (text[i] === "\\") i++
      let next = i + 1
      while (text[next] === " " || text[next] === "\t" || text[next] === "\n" || text[next] === "\r") next++
      const keys = stack[stack.length - 1]
      if (text[next] !== ":" || keys === undefined || keys === null) continue
      const key = JSON.parse(text.slice(start, i + 1)) as string
      if (keys.size === keys.add(key).size) return key
    }
  }
  return undefined
}

/** JSON.parse, throwing a DuplicateKey (naming the key, at most 80 characters) for a key twice in one object. */
export const parseJsonStrict = (text: string): unknown => {
  const value: unknown = JSON.parse(text)
  const duplicate = duplicateKeyOf(text)
  if (duplicate !== undefined) throw new DuplicateKey({ message: `${JSON.stringify(duplicate.slice(0, 80))} twice in one object` })
  return value
}
