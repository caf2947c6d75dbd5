// How the option-limit tests see a refusal (src/iip/optionLimits.ts): the OptionInvalid a plain
// constructor throws, or the one an Effect constructor dies with (never a typed failure).
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { expect } from "vitest"
import { OptionInvalid } from "../../src/iip/optionLimits.ts"

/** The OptionInvalid `construct` throws; fails the test when it throws nothing or something else. */
export const refusal = (construct: () => unknown): OptionInvalid => {
  try {
    construct()
  } catch (error) {
    expect(error).toBeInstanceOf(OptionInvalid)
    return error as OptionInvalid
  }
  throw new Error("constructed without a refusal")
}

/** The OptionInvalid `effect` died with; fails the test when it did not die with one, or failed with a typed error. */
export const defectOf = async (effect: Effect.Effect<unknown, unknown>): Promise<OptionInvalid> => {
  const exit = await Effect.runPromiseExit(effect)
  expect(Exit.isFailure(exit)).toBe(true)
  const reasons = Exit.isFailure(exit) ? exit.cause.reasons : []
  expect(reasons.some(Cause.isFailReason)).toBe(false)
  const defect = reasons.find(Cause.isDieReason)?.defect
  expect(defect).toBeInstanceOf(OptionInvalid)
  return defect as OptionInvalid
}
