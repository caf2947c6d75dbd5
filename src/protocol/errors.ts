// Errors of the byte layer. A ProtocolError always closes the connection it happened on
// (as the reference does); its `rule` names which rule of PROTOCOL.md the peer broke.
import * as Data from "effect/Data"

/** A packet received from the peer broke a wire rule. */
export class ProtocolError extends Data.TaggedError("ProtocolError")<{
  /** Short rule name, stable for logs and tests (e.g. "invalid-status", "length-zero"). */
  readonly rule: string
  /** Human-readable sentence naming the packet and the rule. */
  readonly message: string
}> {}

/** This side was asked to send something the wire cannot carry. Nothing was sent. */
export class PacketEncodeError extends Data.TaggedError("PacketEncodeError")<{
  readonly rule: string
  readonly message: string
}> {}
