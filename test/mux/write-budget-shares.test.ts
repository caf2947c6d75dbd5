// WriteBudget's pauses (src/mux/budget.ts), on members standing for server connections: past the
// bound only those holding more than their share (bound / members) stop reading, each until it
// holds under half its share or the sum is under half the bound; past twice the bound all do,
// until the sum is back under 1.5 times it. Every pause is matched by one resume.
import { describe, expect, it } from "vitest"
import { WriteBudget, type WriteBudgetMember } from "../../src/mux/budget.ts"

class Member implements WriteBudgetMember {
  writeCharged = 0
  paused = 0
  private readonly budget: WriteBudget
  constructor(budget: WriteBudget) {
    this.budget = budget
    budget.join(this)
  }
  pauseReading(): void {
    this.paused++
  }
  resumeReading(): void {
    this.paused--
  }
  /** What a writer does: charges or gives back, then has the budget check. */
  charge(bytes: number): void {
    this.writeCharged += bytes
    this.budget.bytes += bytes
    this.budget.check(this)
  }
}

describe("WriteBudget shares", () => {
  it("past the bound pauses only the member over its share; the others go on, and it resumes under half its share", () => {
    const budget = new WriteBudget(100)
    const [greedy, honest, other] = [new Member(budget), new Member(budget), new Member(budget)]
    greedy.charge(90)
    honest.charge(20)
    expect(budget.exceeded).toBe(true)
    expect([greedy.paused, honest.paused, other.paused]).toEqual([1, 0, 0])
    // The honest one's peer reads: nothing changes for the greedy one, still over its share.
    honest.charge(-20)
    other.charge(30)
    expect([greedy.paused, honest.paused, other.paused]).toEqual([1, 0, 0])
    // Another crossing its share (100 / 3) while the sum is over half the bound stops too.
    other.charge(10)
    expect(other.paused).toBe(1)
    // The greedy one's peer took most of it: under half its share, it reads again.
    greedy.charge(-75)
    expect(greedy.paused).toBe(0)
    expect(other.paused).toBe(1)
    // Under half the bound: everybody reads, the budget no longer exceeded.
    other.charge(-40)
    expect(budget.exceeded).toBe(false)
    expect([greedy.paused, honest.paused, other.paused]).toEqual([0, 0, 0])
    greedy.charge(-15)
    expect(budget.bytes).toBe(0)
  })

  it("past twice the bound every member pauses, one joining then too, until the sum is under 1.5 times it", () => {
    const budget = new WriteBudget(100)
    const [a, b] = [new Member(budget), new Member(budget)]
    a.charge(120)
    b.charge(90)
    expect(budget.bytes).toBe(210)
    const late = new Member(budget)
    expect([a.paused, b.paused, late.paused]).toEqual([2, 2, 1])
    a.charge(-50)
    expect(budget.bytes).toBe(160)
    expect([a.paused, b.paused, late.paused]).toEqual([2, 2, 1])
    a.charge(-20)
    expect([a.paused, b.paused, late.paused]).toEqual([1, 1, 0])
    // Under half the bound: the two over their shares read again.
    b.charge(-90)
    expect([a.paused, b.paused, late.paused]).toEqual([0, 0, 0])
    a.charge(-50)
    expect(budget.bytes).toBe(0)
  })

  it("a member that left is neither paused nor resumed by what its writer gives back after", () => {
    const budget = new WriteBudget(100)
    const [gone, stays] = [new Member(budget), new Member(budget)]
    gone.charge(150)
    expect(gone.paused).toBe(1)
    budget.leave(gone)
    gone.charge(-150)
    expect(gone.paused).toBe(1)
    expect(budget.exceeded).toBe(false)
    stays.charge(10)
    expect(stays.paused).toBe(0)
  })
})
