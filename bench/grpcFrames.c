// The reading half of the gRPC bench's C generator (grpcOpenLoop.c has the rest; its header says what
// an answer must be): the server's frames, each length bounded before it is buffered, each answer's
// DATA compared with the message sent, header blocks skipped whole (never HPACK-decoded), the
// connection-level frames (SETTINGS, PING, GOAWAY, WINDOW_UPDATE) acted on.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "grpcH2.h"
#include "sidecar/loopCore.h"

static Stream *streamOf(Conn *c, uint32_t id) {
  Stream *s = &c->streams[(id >> 1) % MAX_STREAMS];
  return (id & 1) && s->request >= 0 && s->id == id ? s : NULL;
}

/** A DATA frame's payload (padding stripped) for stream `s` (NULL: a call that ended already). 0: the connection failed. */
static int onData(Conn *c, Stream *s, const uint8_t *data, uint32_t length, int ends, int64_t now) {
  if (s == NULL) return 1;
  const Target *t = c->target;
  if (s->got + length > t->expectedLen) {
    s->same = 0;
    s->got = t->expectedLen + 1;
  } else {
    if (s->same && memcmp(t->expected + s->got, data, length) != 0) s->same = 0;
    s->got += length;
  }
  if (s->same) {
    if (ends) endStream(c, s, "the answer ended without trailers (DATA with END_STREAM)", now);
    return 1;
  }
  // The answer is wrong already: the call ends now and its stream is cancelled (unless the server ended it).
  uint32_t id = s->id;
  endStream(c, s, s->got > t->expectedLen ? "answered more bytes than were sent" : "answer's bytes differ", now);
  if (ends) return 1;
  uint8_t code[4];
  put32(code, 0x8);
  return control(c, RST_STREAM, 0, id, code, 4, now);
}

/** A whole header block on stream `id` has come (its END_STREAM as said): the answer's head, or its trailers. */
static void onHeaderBlock(Conn *c, uint32_t id, int endsStream, int64_t now) {
  Stream *s = streamOf(c, id);
  if (s == NULL) return;
  if (!endsStream) {
    s->headed = 1;
    return;
  }
  if (!s->headed) return endStream(c, s, "trailers-only answer (a gRPC error; grpc-status not decoded)", now);
  if (s->got != c->target->expectedLen) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "answered %u bytes of %u", s->got, c->target->expectedLen);
    return endStream(c, s, message, now);
  }
  endStream(c, s, NULL, now);
}

/** Handles one frame (its payload whole in `p`). 0: the connection failed and is closed. */
static int onFrame(Conn *c, int type, int flags, uint32_t stream, const uint8_t *p, uint32_t length, int64_t now) {
  char message[MAX_ERROR];
  if (c->blockStream != 0 && (type != CONTINUATION || stream != c->blockStream)) {
    failConn(c, "protocol error: a header block interrupted", now);
    return 0;
  }
  if (type == DATA || type == HEADERS) {
    if (stream == 0) {
      failConn(c, "protocol error: DATA or HEADERS on stream 0", now);
      return 0;
    }
    uint32_t pad = 0;
    if (flags & PADDED) {
      pad = length > 0 ? p[0] + 1u : 1u;
      if (pad > length) {
        failConn(c, "protocol error: padding over the frame", now);
        return 0;
      }
    }
    if (type == DATA) {
      c->consumed += length;
      if (c->consumed >= WINDOW_REFILL) {
        uint8_t increment[4];
        put32(increment, (uint32_t)c->consumed);
        c->consumed = 0;
        if (!control(c, WINDOW_UPDATE, 0, 0, increment, 4, now)) return 0;
      }
      return onData(c, streamOf(c, stream), p + (pad > 0 ? 1 : 0), length - pad, flags & END_STREAM, now);
    }
    uint32_t skip = (pad > 0 ? 1 : 0) + ((flags & PRIORITY) ? 5 : 0);
    if (skip + (pad > 0 ? pad - 1 : 0) > length) {
      failConn(c, "protocol error: HEADERS shorter than its padding and priority", now);
      return 0;
    }
    c->blockBytes = length;
    c->blockEndsStream = flags & END_STREAM;
    if (flags & END_HEADERS) onHeaderBlock(c, stream, c->blockEndsStream, now);
    else c->blockStream = stream;
    return 1;
  }
  if (type == CONTINUATION) {
    if (c->blockStream == 0) {
      failConn(c, "protocol error: CONTINUATION without HEADERS", now);
      return 0;
    }
    // Each frame's head counts too: empty CONTINUATIONs add no bytes, and would go on forever.
    c->blockBytes += 9 + length;
    if (c->blockBytes > MAX_HEADER_BLOCK) {
      failConn(c, "header block over 65536 bytes", now);
      return 0;
    }
    if (flags & END_HEADERS) {
      c->blockStream = 0;
      onHeaderBlock(c, stream, c->blockEndsStream, now);
    }
    return 1;
  }
  if (type == RST_STREAM) {
    Stream *s = length == 4 ? streamOf(c, stream) : NULL;
    if (s != NULL) {
      snprintf(message, sizeof message, "stream reset by the server (RST_STREAM code %u)", get32(p));
      endStream(c, s, message, now);
    }
    return 1;
  }
  if (type == SETTINGS) {
    if (flags & ACK) return 1;
    if (length % 6 != 0 || stream != 0) {
      failConn(c, "protocol error: malformed SETTINGS", now);
      return 0;
    }
    for (uint32_t at = 0; at < length; at += 6) {
      uint32_t id = (uint32_t)p[at] << 8 | p[at + 1], value = get32(p + at + 2);
      if (id == 3) c->peerMaxStreams = value;
      else if (id == 4 && value > 0x7fffffffu) {
        failConn(c, "protocol error: INITIAL_WINDOW_SIZE over 2^31-1", now);
        return 0;
      } else if (id == 4) c->peerInitialWindow = value;
      else if (id == 5 && (value < 16384 || value > 16777215)) {
        failConn(c, "protocol error: MAX_FRAME_SIZE out of range", now);
        return 0;
      }
      // MAX_FRAME_SIZE at or over 16,384 (the range's least): our frames fit whatever it says.
    }
    if (!control(c, SETTINGS, ACK, 0, NULL, 0, now)) return 0;
    c->state = OPEN;
    return 1;
  }
  if (type == PING) {
    if (length != 8) {
      failConn(c, "protocol error: PING not of 8 bytes", now);
      return 0;
    }
    return (flags & ACK) || control(c, PING, ACK, 0, p, 8, now);
  }
  if (type == GOAWAY) {
    if (length < 8) {
      failConn(c, "protocol error: GOAWAY under 8 bytes", now);
      return 0;
    }
    uint32_t last = get32(p) & 0x7fffffffu;
    snprintf(message, sizeof message, "GOAWAY (code %u) before the call's stream was taken", get32(p + 4));
    for (int k = 0; k < MAX_STREAMS; k++)
      if (c->streams[k].request >= 0 && c->streams[k].id > last) endStream(c, &c->streams[k], message, now);
    // Later calls go on a new connection; this one closes once what the server took is answered.
    c->draining = 1;
    if (c->target->current == c) c->target->current = NULL;
    return 1;
  }
  if (type == WINDOW_UPDATE) {
    if (length != 4) {
      failConn(c, "protocol error: WINDOW_UPDATE not of 4 bytes", now);
      return 0;
    }
    // A stream's window is not tracked: each call sends its one DATA frame whole when it starts.
    if (stream == 0) c->sendWindow += get32(p) & 0x7fffffffu;
    if (c->sendWindow > 0x7fffffff) {
      failConn(c, "protocol error: connection window over 2^31-1", now);
      return 0;
    }
    return 1;
  }
  if (type == PUSH_PROMISE) {
    failConn(c, "protocol error: PUSH_PROMISE though push is off", now);
    return 0;
  }
  return 1; // PRIORITY and unknown types: nothing to do
}

void onReadable(Conn *c, int64_t now) {
  ssize_t n = read(c->fd, c->in + c->inLen, IN_CAP - c->inLen);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    if (n < 0) failConnErrno(c, "read", errno, now);
    else failConn(c, c->state == OPEN ? "connection closed by the server" : "connection closed before the server's SETTINGS", now);
    return;
  }
  c->inLen += (size_t)n;
  size_t at = 0;
  if (c->state == PREFACED && c->inLen >= 9 && c->in[3] != SETTINGS) {
    failConn(c, "protocol error: the server's first frame is not SETTINGS", now);
    return;
  }
  while (c->inLen - at >= 9) {
    const uint8_t *f = c->in + at;
    uint32_t length = (uint32_t)f[0] << 16 | (uint32_t)f[1] << 8 | f[2];
    if (length > OUR_MAX_FRAME) {
      char message[MAX_ERROR];
      snprintf(message, sizeof message, "frame of %u bytes over the 16384 we take", length);
      failConn(c, message, now);
      return;
    }
    if (c->inLen - at < 9 + length) break;
    if (!onFrame(c, f[3], f[4], get32(f + 5) & 0x7fffffffu, f + 9, length, now)) return;
    at += 9 + length;
  }
  memmove(c->in, c->in + at, c->inLen - at);
  c->inLen -= at;
  if (c->draining && c->inFlight == 0) return closeConn(c);
  // Acks and window updates, and the calls that waited for the connection, a stream or the window.
  if (c->outLen > c->outAt && !flush(c, now)) return;
}
