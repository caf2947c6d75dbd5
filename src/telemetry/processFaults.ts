// The process-wide count of exceptions and promise rejections nothing handled, which the long-running
// commands' last line of defence (src/cli/lastResort.ts) survives and reports. metrics.ts serves it
// with the process metrics as iip_mesh_uncaught_errors_total{kind}, so an alert can fire on what
// the process kept running through.

export type FaultKind = "exception" | "rejection"

const counts: Record<FaultKind, number> = { exception: 0, rejection: 0 }

export const processFaults = {
  record: (kind: FaultKind): void => {
    counts[kind] += 1
  },
  counts: (): Readonly<Record<FaultKind, number>> => ({ ...counts })
}
