// acceptsEventStream (eventStream.ts): the accept value A and B both read to tell an event stream,
// scanned from hyphen to hyphen with its letters folded (media types are case-blind, RFC 9110 8.3.1);
// isAcceptName: B's test of the header's name, in any case (field names are case-blind, RFC 9110 5.1);
// isContentTypeName and isEventStreamType: B's test of an answer head (an event stream its request did not announce).
import { expect, it } from "vitest"
import { acceptsEventStream, isAcceptName, isContentTypeName, isEventStreamType } from "../../src/sidecar/eventStream.ts"

it("names text/event-stream in any case, anywhere in the list, and nothing else", () => {
  const yes = ["text/event-stream", "TEXT/EVENT-STREAM", "Text/Event-Stream", "text/html, text/event-stream", "application/signed-exchange;v=b3, text/Event-Stream;q=0.9"]
  const no = ["", "*/*", "-", "text/event", "event-stream", "text/event-streaXm", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"]
  expect(yes.map(acceptsEventStream)).toEqual(yes.map(() => true))
  expect(no.map(acceptsEventStream)).toEqual(no.map(() => false))
  // Only letters fold: a control byte is not "/" or "-" (0x0f | 0x20 is "/", 0x0d | 0x20 is "-").
  expect(acceptsEventStream("text\x0fevent-stream")).toBe(false)
  expect(acceptsEventStream("text/event\x0dstream")).toBe(false)
})

it("isAcceptName: accept in any case, and no other name", () => {
  const yes = ["accept", "Accept", "ACCEPT", "aCcEpT"]
  // Six letters each, or near it; "@", "`" and control bytes are no letters of it however they fold.
  const no = ["", "accep", "accepts", "pragma", "cookie", "origin", "@ccept", "`ccept", "acc\x05pt", "accep\x14"]
  expect(yes.map(isAcceptName)).toEqual(yes.map(() => true))
  expect(no.map(isAcceptName)).toEqual(no.map(() => false))
})

it("isContentTypeName: content-type in any case, and no other name", () => {
  const yes = ["content-type", "Content-Type", "CONTENT-TYPE"]
  // A control byte is no "-" however it folds (0x0d | 0x20 is "-").
  const no = ["", "content-typ", "content-types", "content-range", "content\x0dtype", "Content_Type"]
  expect(yes.map(isContentTypeName)).toEqual(yes.map(() => true))
  expect(no.map(isContentTypeName)).toEqual(no.map(() => false))
})

it("isEventStreamType: the media type is text/event-stream, in any case, with or without parameters", () => {
  const yes = ["text/event-stream", "Text/Event-Stream", "text/event-stream; charset=utf-8", "text/event-stream;charset=utf-8", " text/event-stream", "text/event-stream "]
  const no = ["", "text/event-streams", "text/event-stream-x", "text/plain; x=text/event-stream", "text/html", "text/event", "application/text/event-stream"]
  expect(yes.map(isEventStreamType)).toEqual(yes.map(() => true))
  expect(no.map(isEventStreamType)).toEqual(no.map(() => false))
})
