// The HTTP/2 side of the gRPC bench's C generator, shared by its two halves: grpcOpenLoop.c (targets,
// connections, sending calls; its header says what the generator does and checks) and grpcFrames.c
// (reading the server's frames). The limits every frame and buffer is held to are here.
#ifndef GRPC_H2_H
#define GRPC_H2_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

/** Calls in flight on a connection at most (a stream's slot is its id / 2 modulo this). */
#define MAX_STREAMS 1024
/** The largest frame we take (we do not raise SETTINGS_MAX_FRAME_SIZE from its default). */
#define OUR_MAX_FRAME 16384
/** Our stream windows (SETTINGS_INITIAL_WINDOW_SIZE) and the connection's, raised to it at once. */
#define OUR_WINDOW (1 << 30)
/** Connection-level DATA consumed before we give it back in a WINDOW_UPDATE. */
#define WINDOW_REFILL (1 << 20)
#define MAX_HEADER_BLOCK 65536
#define OUT_MAX (256 * 1024)
/**
 * Output calls leave free for control frames (acks, window updates): a server that is slow to read
 * while it PINGs or refills windows must not find our output full of calls and lose its connection.
 */
#define CONTROL_RESERVE 8192
#define IN_CAP (64 * 1024)

enum { DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9 };
enum { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY = 0x20 };
enum ConnState { CONNECTING, PREFACED, OPEN };

/** A call in flight: its request's index, its stream and how much of the answer came. */
typedef struct Stream {
  long request; /* -1: free slot */
  uint32_t id;
  uint32_t got;
  int same;
  int headed;
} Stream;

typedef struct Target Target;

typedef struct Conn {
  int fd;
  enum ConnState state;
  uint32_t watching;
  Target *target;
  /** After a GOAWAY: no new calls, closed when its last one ends. */
  int draining;
  struct Conn *nextOfTarget;
  uint32_t nextId;
  int inFlight;
  /** The server's settings and our send window on the connection. */
  uint32_t peerMaxStreams;
  int64_t peerInitialWindow;
  int64_t sendWindow;
  /** DATA bytes received and not yet given back. */
  int64_t consumed;
  /** The header block in progress (HEADERS without END_HEADERS): its stream, its bytes, its END_STREAM. */
  uint32_t blockStream;
  size_t blockBytes;
  int blockEndsStream;
  size_t inLen;
  size_t outAt, outLen;
  uint8_t in[IN_CAP];
  uint8_t out[OUT_MAX];
  Stream streams[MAX_STREAMS];
} Conn;

struct Target {
  int used;
  struct sockaddr_in addr;
  /** A call's frames (HEADERS, then DATA with the message), stream ids patched per call. */
  uint8_t *call;
  size_t callLen, headersLen;
  /** The answer each call must get back: the DATA payload sent. */
  const uint8_t *expected;
  uint32_t expectedLen;
  /** The connection new calls go on (NULL: none yet), and every connection (draining ones too). */
  Conn *current;
  Conn *conns;
};

static inline void put24(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 16); p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static inline uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static inline void frameHead(uint8_t *p, uint32_t length, int type, int flags, uint32_t stream) {
  put24(p, length);
  p[3] = (uint8_t)type;
  p[4] = (uint8_t)flags;
  put32(p + 5, stream & 0x7fffffffu);
}

// grpcOpenLoop.c
/** Closes `c` (its calls must have ended or be counted by the caller). */
void closeConn(Conn *c);
/** The call on `s` ends: answered right (error NULL) or with `error`. */
void endStream(Conn *c, Stream *s, const char *error, int64_t now);
/** The connection fails: each call on it is an error with `error`; it closes. */
void failConn(Conn *c, const char *error, int64_t now);
void failConnErrno(Conn *c, const char *what, int error, int64_t now);
/** Writes the output waiting; 0: the connection failed (and is closed). */
int flush(Conn *c, int64_t now);
/** Queues a control frame; 0: no room (the connection failed and is closed). */
int control(Conn *c, int type, int flags, uint32_t stream, const uint8_t *payload, uint32_t length, int64_t now);

// grpcFrames.c
/** Bytes arrived on (or the peer closed) `c`: its whole frames handled, a partial one kept. */
void onReadable(Conn *c, int64_t now);

#endif
