// Small numeric helpers of the sidecar bench: percentiles and medians of samples, and how figures
// are printed (a figure that could not be measured prints as "-").
export const percentile = (sorted: Float64Array, q: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
export const pad = (text: string, width: number, left = false): string => (left ? text.padEnd(width) : text.padStart(width))
export const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(3) : "-")
export const mb = (value: number): string => (Number.isFinite(value) ? value.toFixed(1) : "-")
export const us = (value: number): string => (Number.isFinite(value) ? String(Math.round(value)) : "-")
export const times = (value: number): string => (Number.isFinite(value) ? `${value.toFixed(2)}x` : "-")
export const percent = (value: number) => (Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "-")
export const signed = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? "+" : ""}${value.toFixed(3)}` : "-")
export const round = (value: number, digits: number): number => (Number.isFinite(value) ? Number(value.toFixed(digits)) : NaN)
