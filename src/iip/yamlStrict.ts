// yaml.parse for configuration documents (the routes and policy files as YAML, read by
// documentFile.ts, which loads this module only for a .yaml/.yml file). Those files are re-read
// while the sidecar serves, so what the parser does with a hostile file holds up traffic: the
// document's shape is checked as yaml's own lexer and parser (neither recurses) build its syntax
// tree, and a document past a bound is refused before the composer (which recurses) and toJS run.
import * as Data from "effect/Data"
import { type CST, Composer, type Document, isMap, isPair, isScalar, isSeq, Lexer, Parser } from "yaml"
import { DuplicateKey } from "./jsonStrict.ts"

export class YamlRefused extends Data.TaggedError("YamlRefused")<{ readonly message: string }> {}

/**
 * The deepest nesting of YAML collections taken (flow and block, as yaml's parser holds them open).
 * The composer recurses per level: 100,000 unclosed `[` held the event loop 3.7 s before its stack
 * gave out, and 1,000 levels of `- ` (2,001 bytes) ran it out, at a depth set by the caller's stack.
 */
export const MAX_YAML_DEPTH = 100

/**
 * The lexer's tokens taken (a plain scalar is two, an indicator, a line break, a comment one). The
 * parser builds a CST token, a node and a value for each, a few microseconds apiece, and more as its
 * heap grows: within the 1 MiB a file may hold, 250,000 quoted items held the event loop 10.5 s,
 * 300,000 `- ` entries 5.8 s. At this bound the costliest document measured here (routes as
 * routes.ts documents them: about 100 of them) parses in 135-208 ms of CPU at load 15-18 on 2 cores;
 * a larger document is written as JSON, which parses a MiB in milliseconds.
 */
export const MAX_YAML_TOKENS = 20_000

/**
 * The characters of a YAML document taken (of the 1 MiB a file may hold as JSON). At the token bound
 * a document is about 50-60 KB; what is larger holds long scalars or comments, and yaml's block and
 * folded scalars cost per character: 1 MiB of one took 180-270 ms of CPU, 256 KiB 38-54 ms.
 */
export const MAX_YAML_CHARACTERS = 256 * 1024

const isCollection = (token: CST.Token): boolean => token.type === "block-map" || token.type === "block-seq" || token.type === "flow-collection"

/**
 * `text`'s syntax tree, or why it is not parsed: more than MAX_YAML_CHARACTERS characters or
 * MAX_YAML_TOKENS tokens, or collections nested deeper than MAX_YAML_DEPTH. A `[`, `]`, `{` or `}`
 * in a quoted value, a block scalar or a comment opens and closes nothing in the parser, so it
 * neither hides real nesting (`["]", ["]", ...`) nor adds up to a false one. The lexer and the
 * parser stop at the first bound passed.
 */
const syntaxOf = (text: string, kind: string): Array<CST.Token> | string => {
  const parser = new Parser()
  const tree: Array<CST.Token> = []
  let tokens = 0
  for (const token of new Lexer().lex(text)) {
    if (++tokens > MAX_YAML_TOKENS) return `more than the ${MAX_YAML_TOKENS} YAML tokens a ${kind} may hold`
    for (const node of parser.next(token)) tree.push(node)
    // The parser's stack holds the document, each collection open around this token and the scalar
    // being read: the collections are counted once there could be too many.
    if (parser.stack.length - 1 > MAX_YAML_DEPTH && parser.stack.filter(isCollection).length > MAX_YAML_DEPTH) {
      return `collections nested deeper than ${MAX_YAML_DEPTH}`
    }
  }
  for (const node of parser.end()) tree.push(node)
  // After the lexer, so a file past both bounds is told of its tokens or nesting (the lexer takes 20-60 ms for a MiB of few tokens).
  return text.length > MAX_YAML_CHARACTERS ? `more than the ${MAX_YAML_CHARACTERS} characters a ${kind} may hold as YAML` : tree
}

/**
 * Why the keys of `document` are refused (the error to throw), or undefined: a key that is not a
 * scalar, or a scalar key that appears twice in one mapping, as yaml's own check finds it (equal
 * values: 1 and "1" differ; two .nan keys are one here, as they are one in the object made),
 * in one pass with a set per mapping. yaml's check compares each key with every earlier one of its
 * mapping: 4,900 keys of 48 characters, within both bounds, took 0.8-1.4 s of CPU. A collection
 * key becomes a string in toJS, each nested level anew: 300 nested `? ` keys (601 bytes) took 16.5 s;
 * an alias key passes yaml's duplicate check and becomes the key it names. A configuration file has
 * no use for either. The walk keeps a stack of its own rather than recursing.
 */
const keyProblemOf = (document: Document): YamlRefused | DuplicateKey | undefined => {
  const pending: Array<unknown> = [document.contents]
  while (pending.length > 0) {
    const node = pending.pop()
    if (isMap(node) || isSeq(node)) {
      const keys = isMap(node) ? new Set<unknown>() : undefined
      for (const item of node.items) {
        if (!isPair(item)) {
          pending.push(item)
          continue
        }
        if (!isScalar(item.key)) return new YamlRefused({ message: "a mapping key that is not a scalar (a mapping, a sequence or an alias)" })
        if (keys !== undefined && keys.size === keys.add(item.key.value).size) {
          return new DuplicateKey({ message: `${JSON.stringify(String(item.key.value).slice(0, 80))} twice in one mapping` })
        }
        pending.push(item.value)
      }
    }
  }
  return undefined
}

/**
 * `text` parsed as YAML, if its shape is within the bounds and no mapping holds a key twice; throws
 * YamlRefused, a DuplicateKey, or yaml's own error (the first). `kind` names the file in the refusal.
 */
export const parseYamlStrict = (text: string, kind: string): unknown => {
  const tree = syntaxOf(text, kind)
  if (typeof tree === "string") throw new YamlRefused({ message: tree })
  // yaml's parseDocument on the tree already built: its first document, a second one an error.
  const documents = new Composer({ uniqueKeys: false }).compose(tree, true, text.length)
  const document = documents.next().value as Document
  if (document.errors.length > 0) throw document.errors[0]!
  if (documents.next().done !== true) throw new YamlRefused({ message: `more than one YAML document in a ${kind}` })
  const keyProblem = keyProblemOf(document)
  if (keyProblem !== undefined) throw keyProblem
  return document.toJS({ maxAliasCount: 100 }) as unknown
}
