// A small, strict parser of the Prometheus text exposition format (version 0.0.4), for tests that
// scrape /metrics: it throws on any line it cannot read, so a malformed exposition fails the test
// rather than reading as "no samples". Plus lookups: one sample's value, a sum over samples that
// match some labels, and a histogram checked for consistency (cumulative buckets, +Inf = count).
//
//   const metrics = parsePrometheusText(body)
//   value(metrics, "iip_mesh_requests_total", { service: "catalog", code: "200" })  // exactly one match
//   sum(metrics, "iip_mesh_requests_total", { direction: "outbound" })              // every match
//   histogram(metrics, "iip_mesh_request_duration_seconds", { service: "catalog" }).count

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

export interface Sample {
  /** The sample's own name: for a histogram `x`, one of x_bucket, x_sum, x_count. */
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
  readonly timestampMs?: number
}

export interface MetricFamily {
  readonly name: string
  readonly type: MetricType
  readonly help: string
  readonly samples: ReadonlyArray<Sample>
}

interface MutableFamily {
  name: string
  type: MetricType
  help: string
  samples: Array<Sample>
}

const types: ReadonlyArray<MetricType> = ["counter", "gauge", "histogram", "summary", "untyped"]
const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/

/** Families by name, in the order they appear. Throws with the line number on anything malformed. */
export const parsePrometheusText = (text: string): Map<string, MetricFamily> => {
  const families = new Map<string, MutableFamily>()
  const familyOf = (name: string): MutableFamily => {
    let family = families.get(name)
    if (family === undefined) {
      family = { name, type: "untyped", help: "", samples: [] }
      families.set(name, family)
    }
    return family
  }
  const lines = text.split("\n")
  lines.forEach((line, index) => {
    const fail = (why: string): never => {
      throw new Error(`line ${index + 1}: ${why}: ${JSON.stringify(line)}`)
    }
    if (line.trim() === "") return
    if (line.startsWith("#")) {
      const match = /^#\s*(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line)
      if (match === null) return // any other comment
      const [, keyword, name, rest = ""] = match
      if (!metricName.test(name!)) fail("bad metric name")
      const family = familyOf(name!)
      if (keyword === "HELP") {
        family.help = unescape(rest, false, fail)
      } else {
        if (!(types as ReadonlyArray<string>).includes(rest.trim())) fail("unknown type")
        if (family.samples.length > 0) fail("TYPE after samples")
        family.type = rest.trim() as MetricType
      }
      return
    }
    const sample = parseSample(line, fail)
    familyOf(familyNameOf(sample.name, families)).samples.push(sample)
  })
  return families as Map<string, MetricFamily>
}

/** The family a sample belongs to: its own name, or for x_bucket/_sum/_count the typed family x. */
const familyNameOf = (sampleName: string, families: ReadonlyMap<string, MutableFamily>): string => {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sampleName.endsWith(suffix)) continue
    const base = families.get(sampleName.slice(0, -suffix.length))
    if (base !== undefined && (base.type === "histogram" || (base.type === "summary" && suffix !== "_bucket"))) return base.name
  }
  return sampleName
}

const parseSample = (line: string, fail: (why: string) => never): Sample => {
  const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
  if (nameMatch === null) return fail("expected a metric name")
  const name = nameMatch[0]
  let at = name.length
  const labels: Record<string, string> = {}
  if (line[at] === "{") {
    at++
    while (true) {
      while (line[at] === " ") at++
      if (line[at] === "}") {
        at++
        break
      }
      const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(at))
      if (labelMatch === null || !labelName.test(labelMatch[1]!)) return fail("bad label")
      at += labelMatch[0].length
      let raw = ""
      while (at < line.length && line[at] !== '"') {
        if (line[at] === "\\") raw += line[at++]
        raw += line[at++]
      }
      if (line[at] !== '"') return fail("unterminated label value")
      at++
      if (labelMatch[1]! in labels) fail(`label ${labelMatch[1]} repeated`)
      labels[labelMatch[1]!] = unescape(raw, true, fail)
      while (line[at] === " ") at++
      if (line[at] === ",") at++
      else if (line[at] !== "}") fail("expected , or }")
    }
  }
  const rest = line.slice(at).trim().split(/\s+/)
  if (rest.length < 1 || rest.length > 2 || rest[0] === "") fail("expected a value and an optional timestamp")
  const value = parseValue(rest[0]!, fail)
  if (rest.length === 2) {
    if (!/^-?\d+$/.test(rest[1]!)) fail("bad timestamp")
    return { name, labels, value, timestampMs: Number(rest[1]) }
  }
  return { name, labels, value }
}

/** As Prometheus reads values (Go's ParseFloat): NaN and Inf in any case, so prom-client's `Nan` too. */
const parseValue = (text: string, fail: (why: string) => never): number => {
  const lower = text.toLowerCase()
  if (lower === "+inf" || lower === "inf" || lower === "+infinity" || lower === "infinity") return Infinity
  if (lower === "-inf" || lower === "-infinity") return -Infinity
  if (lower === "nan") return NaN
  const value = Number(text)
  if (text.trim() === "" || Number.isNaN(value)) fail(`bad value ${text}`)
  return value
}

/** HELP text escapes \\ and \n; label values also \". */
const unescape = (text: string, quotes: boolean, fail: (why: string) => never): string =>
  text.replace(/\\(.)/g, (_, c: string) => {
    if (c === "\\") return "\\"
    if (c === "n") return "\n"
    if (c === '"' && quotes) return '"'
    return fail(`bad escape \\${c}`)
  })

const matches = (sample: Sample, labels: Readonly<Record<string, string>>): boolean =>
  Object.entries(labels).every(([name, value]) => sample.labels[name] === value)

/** Samples named `sampleName` (x, or x_bucket, x_sum, x_count) whose labels include `labels`. */
export const samples = (families: ReadonlyMap<string, MetricFamily>, sampleName: string, labels: Readonly<Record<string, string>> = {}): Array<Sample> => {
  const out: Array<Sample> = []
  for (const family of families.values()) for (const sample of family.samples) if (sample.name === sampleName && matches(sample, labels)) out.push(sample)
  return out
}

/** The value of the one sample that matches; throws when none or several do. */
export const value = (families: ReadonlyMap<string, MetricFamily>, sampleName: string, labels: Readonly<Record<string, string>> = {}): number => {
  const found = samples(families, sampleName, labels)
  if (found.length !== 1) throw new Error(`expected one ${sampleName} sample with ${JSON.stringify(labels)}, found ${found.length}`)
  return found[0]!.value
}

/** The sum of every matching sample (0 when none). */
export const sum = (families: ReadonlyMap<string, MetricFamily>, sampleName: string, labels: Readonly<Record<string, string>> = {}): number =>
  samples(families, sampleName, labels).reduce((total, sample) => total + sample.value, 0)

export interface HistogramValue {
  /** Cumulative counts by upper bound, ascending, ending with +Inf. */
  readonly buckets: ReadonlyArray<{ readonly le: number; readonly count: number }>
  readonly sum: number
  readonly count: number
}

/**
 * The one histogram series of `name` whose labels include `labels`, checked: buckets cumulative and
 * ending with +Inf, whose count equals x_count. Throws when it is missing, ambiguous or inconsistent.
 */
export const histogram = (families: ReadonlyMap<string, MetricFamily>, name: string, labels: Readonly<Record<string, string>> = {}): HistogramValue => {
  const family = families.get(name)
  if (family?.type !== "histogram") throw new Error(`${name} is not a histogram`)
  const buckets = samples(families, `${name}_bucket`, labels)
  const series = new Set(buckets.map((b) => JSON.stringify(Object.entries(b.labels).filter(([k]) => k !== "le").sort())))
  if (series.size !== 1) throw new Error(`expected one ${name} series with ${JSON.stringify(labels)}, found ${series.size}`)
  const sorted = buckets.map((b) => ({ le: parseValue(b.labels["le"] ?? "", (why) => { throw new Error(why) }), count: b.value })).sort((a, b) => a.le - b.le)
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.count < sorted[i - 1]!.count) throw new Error(`${name}: buckets are not cumulative`)
  if (sorted.at(-1)?.le !== Infinity) throw new Error(`${name}: no +Inf bucket`)
  const count = value(families, `${name}_count`, labels)
  if (sorted.at(-1)!.count !== count) throw new Error(`${name}: +Inf bucket ${sorted.at(-1)!.count} != count ${count}`)
  return { buckets: sorted, sum: value(families, `${name}_sum`, labels), count }
}
