// The inbound sidecar's budget for what its h2c leg's answers hold (appH2.ts, appH2Exchange.ts),
// and, an instance of its own, its HTTP/1.1 leg's (appExchange.ts: a paused pool socket counts its
// kernel receive buffer too, --app-pool-max-held-bytes):
// the bytes an app sent B that the mesh has not taken yet, over all the leg's sessions. Each stream
// B opens to the app has a 256 KiB window given back as the mesh takes its answer, so an answer
// whose caller stops reading holds that window past its queue's 64 KiB high-water mark; with up to
// --app-h2-max-streams such streams (and answers the app ended, which leave their place but not
// their bytes) one calling pod that reads none of many large answers held hundreds of MiB at B.
// So the bytes are counted from the moment B reads them from the app (an answer gathered whole:
// its parts; a streamed one: its queue, byteQueue.ts's pool, and the chunk the mesh's sender took
// of it until it sent all of that on) to the moment the mesh sends them on or the answer ends any
// way; past --app-h2-max-held-bytes, at the end of the read that passed it, answers are taken back
// until the count is under it again: each one's stream to the app reset (CANCEL), its queue
// dropped, and its caller told at once why (`overloaded`, processed: never retried), ahead of the
// bytes it did not read.
// Which first: the answer stalled longest on its reader. Holding the most does not tell a dead
// reader from a live one (both fill the window when the app is faster), how long an answer has
// waited on its reader does: a reader that keeps reading takes a chunk as often as the mesh grants
// it and its pause ends once half its queue is taken, while a stalled one's pause only grows. An
// answer waits on its reader from the first byte queued that its reader did not wait for (or its
// pause) until its reader took all that was queued (or its pause ended): an answer that holds less
// than the queue's high-water mark and is never read (a watch's snapshot, then nothing) waits too,
// its stream never paused. So: first the answers waiting on their reader with nothing taken since
// the wait began, the oldest wait first; then those waiting that took something (slow readers),
// oldest wait first; last, and only if that is not enough, the others (their reader waits for
// their bytes), the largest first. Answers still gathered whole count in the gauge but neither
// are taken back nor set a look off (the budget bounds the streamed answers' queues): each holds
// at most 64 KiB and a read, for 21 ms at most (appH2.ts's waits), on one of the places. Nothing
// is done per chunk but a few additions and a comparison; the ranking is made only past the budget,
// and only as far as it takes (minHeap.ts).

import { MinHeap } from "./minHeap.ts"

/** An answer the budget counts and may take back: an exchange of the h2c leg (appH2Exchange.ts) or of the HTTP/1.1 leg (appExchange.ts). */
export interface HeldAnswer {
  /** Bytes it holds now (its queue's, and the chunk the mesh's sender holds). */
  readonly heldNow: number
  /** Its wait on its reader, once it streams (a ReaderWait). */
  readonly readerWait: Waiting | undefined
  /** Ends it now, its bytes let go of; `message` tells its caller why. */
  takeBackHeld(message: string): void
}

/** What a look reads of an answer's wait on its reader. */
export interface Waiting {
  /** It waits on its reader only since `at` (performance.now(); 0: it does not). */
  readonly at: number
  /** What the mesh had taken of it when the wait began, and so far. */
  readonly passedAtWait: number
  readonly passed: number
}

/** The queue a streamed answer's bytes wait in for its reader (byteQueue.ts's PausingByteQueue). */
interface ReaderQueue {
  /** Bytes queued, and the chunk its reader took and has not let go of (byteQueue.ts). */
  readonly heldBytes: number
  /** Its reader waits for the next chunk. */
  readonly readerWaiting: boolean
  push(chunk: Buffer): void
}

/**
 * A streamed answer's wait on its reader, kept here for every leg so each begins it as the look
 * ranks it: bytes go to the queue only through `push`, which begins the wait before the bytes
 * count, since `passed` (bytes pushed less those still held: queued, or lent to the mesh's
 * sender) read after would count a chunk the mesh never took, and a reader stalled since would
 * rank as one that took some, behind an honest reader that took a chunk.
 */
export class ReaderWait implements Waiting {
  at = 0
  passedAtWait = 0
  /** Bytes pushed to the queue so far. */
  private pushed = 0
  private readonly queue: ReaderQueue

  constructor(queue: ReaderQueue) {
    this.queue = queue
  }

  get passed(): number {
    return this.pushed - this.queue.heldBytes
  }

  /** `chunk` goes to the reader: bytes it does not wait for, so from now the answer waits on it (until it takes them all, or resumes). */
  push(chunk: Buffer): void {
    if (this.at === 0 && !this.queue.readerWaiting) this.begin(performance.now())
    this.pushed += chunk.length
    this.queue.push(chunk)
  }

  /** The answer waits on its reader from `at` on (its stream paused), unless it waits already. */
  begin(at: number): void {
    if (this.at !== 0) return
    this.at = at
    this.passedAtWait = this.passed
  }

  /** The app ended the answer: what is queued now waits on its reader only. */
  ended(): void {
    if (this.queue.heldBytes > 0) this.begin(performance.now())
  }

  /** Its reader let go of all that was queued (handed it to the mesh's writer): it waits on it no more. */
  taken(): void {
    if (this.queue.heldBytes === 0) this.at = 0
  }

  /** Its paused stream reads again: it waits on its reader no more. */
  resumed(): void {
    this.at = 0
  }
}

/** What a look past the budget ranks an answer by. */
interface Ranked {
  readonly answer: HeldAnswer
  /** 0: waiting on its reader, nothing taken since; 1: waiting, some taken; 2: not waiting on its reader. */
  readonly rank: number
  /** Within a rank, lower first: when its wait began (ranks 0, 1), minus what it holds (rank 2). */
  readonly order: number
  /** Its place in the look's walk of the answers: equal ranks and orders come out in it. */
  readonly seq: number
}

const takenFirst = (a: Ranked, b: Ranked): boolean => (a.rank - b.rank || a.order - b.order || a.seq - b.seq) < 0

export class HeldAnswers {
  /** Bytes held now (byteQueue.ts's pool adds and takes its queues' bytes here). */
  bytes = 0
  /**
   * Of `bytes`, those of answers still gathered whole (appH2Exchange.ts): they go on within 21 ms
   * and are never taken back, so they set no look off; else a burst of large unary answers would
   * take back streamed answers whose readers keep up.
   */
  whole = 0
  readonly max: number
  /** Answers taken back past the budget (a counter reads it). */
  takenBack = 0
  /** The streamed answers counted now, from their first byte queued until their queue is over. */
  private readonly answers = new Set<HeldAnswer>()
  /** A look is due at the end of this turn's microtasks. */
  private due = false
  private readonly onTakenBack: (count: number, held: number) => void
  /** The setting that sets `max`, as a caller taken back is told. */
  private readonly setting: string

  /** `onTakenBack`: a look took back `count` answers, the budget holding `held` bytes before it. */
  constructor(max: number, onTakenBack: (count: number, held: number) => void = () => {}, setting = "--app-h2-max-held-bytes") {
    this.max = max
    this.onTakenBack = onTakenBack
    this.setting = setting
  }

  /** Streamed answers counted now (a test's measure: none once every call is over). */
  get counted(): number {
    return this.answers.size
  }

  join(answer: HeldAnswer): void {
    this.answers.add(answer)
  }

  leave(answer: HeldAnswer): void {
    this.answers.delete(answer)
  }

  /** Bytes came in: past the budget, a look is due once the read that brought them is over (one look for the whole read). */
  check(): void {
    if (this.bytes - this.whole <= this.max || this.due) return
    this.due = true
    queueMicrotask(this.look)
  }

  private readonly look = (): void => {
    this.due = false
    const before = this.bytes - this.whole
    if (before <= this.max) return
    const ranked: Array<Ranked> = []
    for (const answer of this.answers) {
      if (answer.heldNow === 0) continue
      const seq = ranked.length
      const wait = answer.readerWait
      if (wait === undefined || wait.at === 0) ranked.push({ answer, rank: 2, order: -answer.heldNow, seq })
      else ranked.push({ answer, rank: wait.passed === wait.passedAtWait ? 0 : 1, order: wait.at, seq })
    }
    // Only the first few are taken back, usually: a heap gives them in order without sorting all.
    const first = new MinHeap(ranked, takenFirst)
    const now = performance.now()
    let count = 0
    while (this.bytes - this.whole > this.max) {
      const next = first.pop()
      if (next === undefined) break
      const { answer, rank, order } = next
      count++
      this.takenBack++
      const why = rank === 2 ? "its reader keeps up, but no answer waiting on its reader was left to take back" : `it waited ${Math.round(now - order)} ms on its reader${rank === 0 ? ", which took none of it" : ""}, the longest of those held`
      answer.takeBackHeld(`its answer was taken back at the inbound sidecar: the answers of its app held ${this.bytes - this.whole} bytes their callers had not read, past ${this.setting} ${this.max}; this one held ${answer.heldNow}, and ${why}; retry later`)
    }
    if (count > 0) this.onTakenBack(count, before)
  }
}
