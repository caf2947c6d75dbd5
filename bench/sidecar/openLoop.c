// The sidecar bench's open-loop load generator in C (cLoad.ts compiles it, spawns it once and drives
// it; nodeLoad.ts's openLoop is the Node one it replaces by default). Written so that the generator's
// own GC pauses and timer lateness stay out of the tails it measures: single-threaded, epoll,
// non-blocking sockets, TCP_NODELAY, a timerfd for the schedule (ns, not epoll_wait's ms).
//
// Line protocol, one command a line on stdin, one answer line on stdout per command:
//   target ID HOST PORT HOSTHEADER|- MAXSOCKETS
//     registers a target (connections opened lazily, kept alive, MAXSOCKETS at most) -> {"ok":true}
//   run ID RATE MS WARMUP_MS GIVEUP_MS
//     an open loop: request i is due at start + i / RATE, sent as soon as it is due (earlier ones
//     unanswered or not) on the target's most recently used idle connection (as node's Agent), or
//     a new one while fewer than MAXSOCKETS are open, else queued in order; its latency runs from
//     its due time to its answer's last byte; only requests due WARMUP_MS after the start count.
//     Answers are waited for GIVEUP_MS after the last was due at most, then the rest are errors.
//     -> {"sent":N,"errors":N,"firstError":null|"...","maxOutstanding":N,
//         "dueMs":[epoch ms (CLOCK_REALTIME-based), ...],"ms":[latency ms, ...]}
//   anything else -> {"error":"..."}; stdin's end -> exit.
// Each request is nodeLoad.ts's, byte for byte (POST /echo, 1 KiB body, Connection: keep-alive);
// each answer is read by httpAnswer.c and checked as there: status 200 and exactly 1,024 body bytes.
// The peers are proxies under test, some broken on purpose: every length is bounded (httpAnswer.h's;
// a command line 4 KiB; connections per target and over all) and a bad answer is an error of its
// request and closes its connection, never a crash.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "httpAnswer.h"

#define PATH "/echo"
#define PAYLOAD_BYTES 1024
#define MAX_TARGETS 64
#define MAX_SOCKETS 1024
/** Connections open at once over every target (each holds a 16 KiB buffer; a test compiles a lower one). */
#ifndef MAX_CONNS
#define MAX_CONNS 4096
#endif
#define MAX_HOST_HEADER 256
#define MAX_COMMAND 4096
#define MAX_REQUESTS 2000000L
#define MAX_ERROR 200

enum State { CONNECTING, BUSY, IDLE };

typedef struct Target Target;

typedef struct Conn {
  int fd;
  enum State state;
  /** The epoll events it is registered for (a change costs a system call). */
  uint32_t watching;
  Target *target;
  /** Its slot in target->conns (swap-removed on close). */
  int slot;
  /** The request on it (index in the run), or -1. */
  long request;
  size_t written;
  /** Its answer as read so far. */
  Answer answer;
} Conn;

struct Target {
  int used;
  struct sockaddr_in addr;
  int maxSockets;
  char *request;
  size_t requestLen;
  Conn **conns;
  int open;
  /** Idle connections, the most recently used last (a LIFO stack, as node's Agent). */
  Conn **idle;
  int idleCount;
};

static Target targets[MAX_TARGETS];
static int openConns;
static int epfd;
static int timerfd;

/** The run in progress. */
static struct {
  long total;
  long next;
  long queued;
  long outstanding;
  long maxOutstanding;
  long errors;
  char firstError[MAX_ERROR];
  int64_t start;
  int64_t measureStart;
  double intervalNs;
  double *latency;
} run;

static int64_t nowNs(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t dueOf(long i) { return run.start + (int64_t)((double)i * run.intervalNs + 0.5); }

/** `text` made fit for a JSON string as it is: what would need escaping becomes '?'. */
static void jsonSafe(char *text) {
  for (char *c = text; *c != '\0'; c++)
    if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) *c = '?';
}

static void noteError(const char *format, ...) {
  run.errors++;
  if (run.firstError[0] != '\0') return;
  va_list args;
  va_start(args, format);
  vsnprintf(run.firstError, sizeof run.firstError, format, args);
  va_end(args);
  jsonSafe(run.firstError);
}

static void closeConn(Conn *c) {
  Target *t = c->target;
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->state == IDLE) {
    for (int i = 0; i < t->idleCount; i++)
      if (t->idle[i] == c) {
        memmove(&t->idle[i], &t->idle[i + 1], (size_t)(t->idleCount - i - 1) * sizeof(Conn *));
        t->idleCount--;
        break;
      }
  }
  openConns--;
  t->conns[c->slot] = t->conns[--t->open];
  t->conns[c->slot]->slot = c->slot;
  free(c);
}

/** The request on `c` ends: with `error` (NULL: answered; its latency noted if measured). */
static void finishRequest(Conn *c, const char *error, int64_t now) {
  long i = c->request;
  c->request = -1;
  run.outstanding--;
  if (error != NULL) noteError("%s", error);
  else if (c->answer.status != 200) noteError("status %d", c->answer.status);
  else if (c->answer.body != PAYLOAD_BYTES) noteError("echoed %lld bytes", c->answer.body);
  else {
    int64_t due = dueOf(i);
    if (due >= run.measureStart) run.latency[i] = (double)(now - due) / 1e6;
  }
}

/** A request fails and its connection goes: the connection's state is unknown after it. */
static void failConn(Conn *c, const char *error, int64_t now) {
  if (c->request >= 0) finishRequest(c, error, now);
  closeConn(c);
}

static void watch(Conn *c, uint32_t events) {
  if (c->watching == events) return;
  c->watching = events;
  struct epoll_event ev = { .events = events, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/** Sends what is left of the request; waits for EPOLLOUT if the socket takes only part. */
static void writeRequest(Conn *c, int64_t now) {
  Target *t = c->target;
  while (c->written < t->requestLen) {
    // write(2), not send(2): the bench counts a client's system calls from /proc/PID/io, whose syscw
    // counts write-family calls only (the Node loop's are). SIGPIPE is ignored: a gone peer is EPIPE.
    ssize_t n = write(c->fd, t->request + c->written, t->requestLen - c->written);
    if (n > 0) {
      c->written += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch(c, EPOLLIN | EPOLLOUT);
      return;
    }
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "write: %s", n < 0 ? strerror(errno) : "nothing written");
    failConn(c, message, now);
    return;
  }
  watch(c, EPOLLIN);
}

static void startRequest(Conn *c, long i, int64_t now) {
  c->request = i;
  c->state = BUSY;
  c->written = 0;
  answerReset(&c->answer);
  writeRequest(c, now);
}

/** Opens a connection for request `i` (it is written once connected); the request fails if it cannot. */
static void openConn(Target *t, long i, int64_t now) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  Conn *c = fd < 0 ? NULL : malloc(sizeof(Conn));
  if (c == NULL) {
    if (fd >= 0) close(fd);
    run.outstanding--;
    noteError("socket: %s", strerror(errno));
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *c = (Conn){ .fd = fd, .state = CONNECTING, .watching = EPOLLOUT, .target = t, .slot = t->open, .request = i };
  t->conns[t->open++] = c;
  openConns++;
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  if (connect(fd, (struct sockaddr *)&t->addr, sizeof t->addr) == 0) {
    startRequest(c, i, now);
  } else if (errno != EINPROGRESS) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "connect: %s", strerror(errno));
    failConn(c, message, now);
  }
}

/** Closes the least recently used idle connection of a target other than `t`; 0 if there is none. */
static int evictIdle(Target *t) {
  for (int k = 0; k < MAX_TARGETS; k++)
    if (&targets[k] != t && targets[k].used && targets[k].idleCount > 0) {
      closeConn(targets[k].idle[0]);
      return 1;
    }
  return 0;
}

/**
 * Hands the queued requests, in order, to idle connections (the most recently used first) or new
 * ones (at MAX_CONNS over all targets, another target's idle one is closed for it).
 */
static void dispatch(Target *t, int64_t now) {
  while (run.queued < run.next) {
    if (t->idleCount > 0) startRequest(t->idle[--t->idleCount], run.queued++, now);
    else if (t->open < t->maxSockets && (openConns < MAX_CONNS || evictIdle(t))) openConn(t, run.queued++, now);
    else return;
  }
}

/** Bytes arrived on (or the peer closed) `c`. */
static void onReadable(Conn *c, int64_t now) {
  Answer *a = &c->answer;
  ssize_t n = read(c->fd, a->buf + a->len, sizeof a->buf - a->len);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (c->state == IDLE) {
    // The server closed an idle connection, or sent bytes nobody asked for: it is not reused.
    closeConn(c);
    return;
  }
  if (n < 0) {
    char message[MAX_ERROR];
    snprintf(message, sizeof message, "read: %s", strerror(errno));
    failConn(c, message, now);
    return;
  }
  if (n == 0) {
    if (a->phase == BODY_UNTIL_CLOSE) {
      finishRequest(c, NULL, now);
      closeConn(c);
    } else failConn(c, a->phase == HEAD && a->len == 0 ? "connection closed before the answer" : "connection closed mid-answer", now);
    return;
  }
  a->len += (size_t)n;
  const char *error = NULL;
  enum Parsed parsed = answerParse(a, &error);
  if (parsed == FAILED) failConn(c, error, now);
  else if (parsed == COMPLETE) {
    finishRequest(c, NULL, now);
    // Unasked-for bytes after the answer, or the server's close: the connection is not reused.
    if (a->closeAfter || a->len > 0 || c->written < c->target->requestLen) closeConn(c);
    else {
      c->state = IDLE;
      c->target->idle[c->target->idleCount++] = c;
    }
  }
}

static void onEvent(Conn *c, uint32_t events, int64_t now) {
  if (c->state == CONNECTING) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error != 0) {
      char message[MAX_ERROR];
      snprintf(message, sizeof message, "connect: %s", strerror(error));
      failConn(c, message, now);
    } else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) startRequest(c, c->request, now);
    return;
  }
  if (c->state == BUSY && (events & EPOLLOUT) && c->written < c->target->requestLen) {
    writeRequest(c, now);
    return;
  }
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) onReadable(c, now);
}

/** When the timer is set to fire (re-arming it to the same time would cost a system call a loop). */
static int64_t armedAt = -1;

static void armTimer(int64_t at) {
  if (at == armedAt) return;
  armedAt = at;
  struct itimerspec spec = { .it_value = { .tv_sec = at / 1000000000LL, .tv_nsec = at % 1000000000LL } };
  timerfd_settime(timerfd, TFD_TIMER_ABSTIME, &spec, NULL);
}

/** Output, grown as needed (a run's answer: ~40 bytes per measured request). */
static char *out;
static size_t outLen, outCap;

static void emit(const char *format, ...) {
  for (;;) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(out + outLen, outCap - outLen, format, args);
    va_end(args);
    if (n < 0) return;
    if ((size_t)n < outCap - outLen) {
      outLen += (size_t)n;
      return;
    }
    size_t cap = outCap * 2 + (size_t)n + 64;
    char *bigger = realloc(out, cap);
    if (bigger == NULL) {
      fprintf(stderr, "openloop: out of memory for the answer\n");
      exit(1);
    }
    out = bigger;
    outCap = cap;
  }
}

static void flushLine(void) {
  emit("\n");
  for (size_t at = 0; at < outLen;) {
    ssize_t n = write(1, out + at, outLen - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) exit(0); // the bench is gone
    at += (size_t)n;
  }
  outLen = 0;
}

static void answerError(const char *format, ...) {
  char message[MAX_ERROR];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  jsonSafe(message);
  emit("{\"error\":\"%s\"}", message);
  flushLine();
}

static void registerTarget(long id, const char *host, long port, const char *hostHeader, long maxSockets) {
  if (id < 0 || id >= MAX_TARGETS) return answerError("target id must be 0-%d", MAX_TARGETS - 1);
  if (port < 1 || port > 65535) return answerError("bad port");
  if (maxSockets < 1 || maxSockets > MAX_SOCKETS) return answerError("maxsockets must be 1-%d", MAX_SOCKETS);
  if (strlen(hostHeader) > MAX_HOST_HEADER) return answerError("host header over %d bytes", MAX_HOST_HEADER);
  for (const char *h = hostHeader; *h != '\0'; h++)
    if ((unsigned char)*h <= 0x20 || (unsigned char)*h >= 0x7f) return answerError("bad host header");
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return answerError("host must be an IPv4 address");
  Target *t = &targets[id];
  if (t->used) {
    while (t->open > 0) closeConn(t->conns[0]);
    free(t->request);
    free(t->conns);
    free(t->idle);
  }
  char head[512];
  int headLen = strcmp(hostHeader, "-") == 0
    ? snprintf(head, sizeof head, "POST %s HTTP/1.1\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\nHost: %s:%ld\r\nConnection: keep-alive\r\n\r\n", PATH, PAYLOAD_BYTES, host, port)
    : snprintf(head, sizeof head, "POST %s HTTP/1.1\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\nhost: %s\r\nConnection: keep-alive\r\n\r\n", PATH, PAYLOAD_BYTES, hostHeader);
  *t = (Target){ .used = 1, .addr = addr, .maxSockets = (int)maxSockets, .requestLen = (size_t)headLen + PAYLOAD_BYTES };
  t->request = malloc(t->requestLen);
  t->conns = calloc((size_t)maxSockets, sizeof(Conn *));
  t->idle = calloc((size_t)maxSockets, sizeof(Conn *));
  if (t->request == NULL || t->conns == NULL || t->idle == NULL) {
    fprintf(stderr, "openloop: out of memory\n");
    exit(1);
  }
  memcpy(t->request, head, (size_t)headLen);
  // request.ts's payloadByte(i) = (i * 31 + 7) & 0xff.
  for (int i = 0; i < PAYLOAD_BYTES; i++) t->request[headLen + i] = (char)((i * 31 + 7) & 0xff);
  emit("{\"ok\":true}");
  flushLine();
}

/** Handles the events one epoll_wait returned (`now`: when it returned). */
static void handleEvents(struct epoll_event *events, int n, int64_t now) {
  for (int k = 0; k < n; k++) {
    if (events[k].data.ptr == NULL) {
      armedAt = -1;
      uint64_t expirations;
      ssize_t ignored = read(timerfd, &expirations, sizeof expirations);
      (void)ignored;
      continue;
    }
    onEvent(events[k].data.ptr, events[k].events, now);
  }
}

static void runLoop(long id, double rate, long ms, long warmupMs, long giveupMs) {
  if (id < 0 || id >= MAX_TARGETS || !targets[id].used) return answerError("no target %ld", id);
  if (!(rate > 0 && rate <= 1000000)) return answerError("rate must be over 0 and at most 1000000");
  // Each bounded before they are added: sscanf clamps an over-long number to LONG_MAX, and a sum
  // past it would wrap negative, pass, and leave a run that never ends.
  if (ms < 0 || warmupMs < 0 || ms > 3600000 || warmupMs > 3600000 - ms || giveupMs < 0 || giveupMs > 600000) return answerError("bad durations");
  // Rounded as nodeLoad.ts's Math.round (no libm: cLoad.ts links nothing else).
  long total = (long)((double)(warmupMs + ms) / 1000.0 * rate + 0.5);
  if (total > MAX_REQUESTS) return answerError("over %ld requests in one run", MAX_REQUESTS);
  Target *t = &targets[id];
  double *latency = malloc((size_t)(total > 0 ? total : 1) * sizeof(double));
  if (latency == NULL) return answerError("out of memory for %ld requests", total);
  for (long i = 0; i < total; i++) latency[i] = -1;
  run.total = total;
  run.next = run.queued = run.outstanding = run.maxOutstanding = run.errors = 0;
  run.firstError[0] = '\0';
  run.latency = latency;
  run.intervalNs = 1e9 / rate;
  // What happened since the last run first: an idle connection its server closed meanwhile is
  // dropped now, not handed the first request. Only idle connections exist between runs.
  struct epoll_event events[64];
  for (int n = 64; n == 64;) {
    n = epoll_wait(epfd, events, 64, 0);
    handleEvents(events, n, nowNs(CLOCK_MONOTONIC));
  }
  // CLOCK_MONOTONIC schedules; due times are reported on CLOCK_REALTIME through one offset.
  int64_t epochOffset = nowNs(CLOCK_REALTIME) - nowNs(CLOCK_MONOTONIC);
  run.start = nowNs(CLOCK_MONOTONIC) + 1000000;
  run.measureStart = run.start + (int64_t)warmupMs * 1000000;
  int64_t giveUpAt = (total > 0 ? dueOf(total - 1) : run.start) + (int64_t)giveupMs * 1000000;
  for (;;) {
    int64_t now = nowNs(CLOCK_MONOTONIC);
    while (run.next < total && dueOf(run.next) <= now) {
      run.next++;
      if (++run.outstanding > run.maxOutstanding) run.maxOutstanding = run.outstanding;
    }
    dispatch(t, now);
    if (run.next == total && run.outstanding == 0) break;
    if (run.next == total && now >= giveUpAt) {
      // What is still unanswered (queued or on a connection) fails; those connections go.
      long left = run.outstanding;
      run.errors += left;
      if (run.firstError[0] == '\0') snprintf(run.firstError, sizeof run.firstError, "%ld requests unanswered %ld ms after the last was due", left, giveupMs);
      for (int k = t->open - 1; k >= 0; k--)
        if (t->conns[k]->state != IDLE) closeConn(t->conns[k]);
      run.outstanding = 0;
      break;
    }
    armTimer(run.next < total ? dueOf(run.next) : giveUpAt);
    int n = epoll_wait(epfd, events, 64, -1);
    handleEvents(events, n, nowNs(CLOCK_MONOTONIC));
  }
  emit("{\"sent\":%ld,\"errors\":%ld,\"firstError\":", total, run.errors);
  if (run.firstError[0] == '\0') emit("null");
  else emit("\"%s\"", run.firstError);
  emit(",\"maxOutstanding\":%ld,\"dueMs\":[", run.maxOutstanding);
  int first = 1;
  for (long i = 0; i < total; i++)
    if (latency[i] >= 0) {
      emit(first ? "%.3f" : ",%.3f", (double)(dueOf(i) + epochOffset) / 1e6);
      first = 0;
    }
  emit("],\"ms\":[");
  first = 1;
  for (long i = 0; i < total; i++)
    if (latency[i] >= 0) {
      emit(first ? "%.3f" : ",%.3f", latency[i]);
      first = 0;
    }
  emit("]}");
  free(latency);
  run.latency = NULL;
  flushLine();
}

static void command(char *line) {
  // Each field as long as the line can be, so an over-long one is named, not misread.
  static char host[MAX_COMMAND + 1], hostHeader[MAX_COMMAND + 1];
  char verb[16];
  long id, port, maxSockets, ms, warmupMs, giveupMs;
  double rate;
  char extra;
  if (sscanf(line, "%15s", verb) != 1) return answerError("empty command");
  if (strcmp(verb, "target") == 0 &&
      sscanf(line, "target %ld %4096s %ld %4096s %ld %c", &id, host, &port, hostHeader, &maxSockets, &extra) == 5)
    return registerTarget(id, host, port, hostHeader, maxSockets);
  if (strcmp(verb, "run") == 0 && sscanf(line, "run %ld %lf %ld %ld %ld %c", &id, &rate, &ms, &warmupMs, &giveupMs, &extra) == 5)
    return runLoop(id, rate, ms, warmupMs, giveupMs);
  answerError("unknown or malformed command (target ID HOST PORT HOSTHEADER|- MAXSOCKETS, run ID RATE MS WARMUP_MS GIVEUP_MS)");
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  // Dies with the bench even if it is killed without closing our stdin.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (epfd < 0 || timerfd < 0) {
    perror("openloop: epoll/timerfd");
    return 1;
  }
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
  epoll_ctl(epfd, EPOLL_CTL_ADD, timerfd, &ev);
  static char line[MAX_COMMAND + 1];
  size_t len = 0;
  int skipping = 0;
  for (;;) {
    ssize_t n = read(0, line + len, MAX_COMMAND - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    len += (size_t)n;
    char *nl;
    while ((nl = memchr(line, '\n', len)) != NULL) {
      *nl = '\0';
      if (!skipping) command(line);
      skipping = 0;
      len -= (size_t)(nl + 1 - line);
      memmove(line, nl + 1, len);
    }
    if (len == MAX_COMMAND) {
      // A line over the bound: refused once, the rest of it dropped up to its newline.
      if (!skipping) answerError("command line over %d bytes", MAX_COMMAND);
      skipping = 1;
      len = 0;
    }
  }
}
