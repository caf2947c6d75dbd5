// A FrameHandler that records every call as a plain tuple (buffers copied), for the frame layer's
// tests (test/h2/frame*.test.ts): what the reader delivered, in order, and the errors it reported.
import type { FrameHandler } from "../../src/h2/frameReader.ts"
import type { H2FrameError } from "../../src/h2/frames.ts"

export type FrameEvent =
  | readonly ["data", number, Buffer, number, boolean]
  | readonly ["headers", number, Buffer, boolean]
  | readonly ["rst", number, number]
  | readonly ["setting", number, number]
  | readonly ["settingsEnd"]
  | readonly ["settingsAck"]
  | readonly ["ping", Buffer, boolean]
  | readonly ["goaway", number, number, Buffer]
  | readonly ["windowUpdate", number, number]

export interface Recorder extends FrameHandler {
  readonly events: Array<FrameEvent>
  readonly errors: Array<H2FrameError>
  /** Every DATA piece of `streamId` joined, and whether one of them ended the stream. */
  readonly body: (streamId: number) => { readonly bytes: Buffer; readonly ended: boolean; readonly flow: number }
}

export const recorder = (onEvent: (event: FrameEvent) => void = () => {}): Recorder => {
  const events: Array<FrameEvent> = []
  const errors: Array<H2FrameError> = []
  const push = (event: FrameEvent): void => {
    events.push(event)
    onEvent(event)
  }
  return {
    events,
    errors,
    onData: (streamId, data, flowLength, endStream) => push(["data", streamId, Buffer.from(data), flowLength, endStream]),
    onHeaders: (streamId, block, endStream) => push(["headers", streamId, Buffer.from(block), endStream]),
    onRstStream: (streamId, code) => push(["rst", streamId, code]),
    onSetting: (id, value) => push(["setting", id, value]),
    onSettingsEnd: () => push(["settingsEnd"]),
    onSettingsAck: () => push(["settingsAck"]),
    onPing: (payload, ack) => push(["ping", Buffer.from(payload), ack]),
    onGoAway: (last, code, debug) => push(["goaway", last, code, Buffer.from(debug)]),
    onWindowUpdate: (streamId, increment) => push(["windowUpdate", streamId, increment]),
    onError: (error) => errors.push(error),
    body: (streamId) => {
      const pieces = events.filter((e): e is readonly ["data", number, Buffer, number, boolean] => e[0] === "data" && e[1] === streamId)
      return { bytes: Buffer.concat(pieces.map((e) => e[2])), ended: pieces.some((e) => e[4]), flow: pieces.reduce((sum, e) => sum + e[3], 0) }
    }
  }
}
