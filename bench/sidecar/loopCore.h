// The open-loop core the C load generators share (loopCore.c): the schedule on a timerfd, the run's
// bookkeeping, the line protocol's reader and its JSON answers. Each generator (openLoop.c: HTTP/1.1
// for the sidecar bench; ../grpcOpenLoop.c: unary gRPC over h2c for the gRPC bench) links it and
// supplies the loop* functions below: its targets, how queued requests go out, its socket events.
#ifndef LOOP_CORE_H
#define LOOP_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define MAX_COMMAND 4096
#define MAX_ERROR 200
#define MAX_REQUESTS 2000000L

/**
 * The run in progress. Requests [0, next) are due; [queued, next) wait, in order, for the generator
 * to send them; `outstanding` counts the due ones not yet ended (waiting or sent).
 */
typedef struct Run {
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
} Run;

extern Run run;
extern int epfd;

int64_t nowNs(clockid_t clock);
/** When request `i` of the run is due (CLOCK_MONOTONIC ns). */
int64_t dueOf(long i);
/** `text` made fit for a JSON string as it is: what would need escaping becomes '?'. */
void jsonSafe(char *text);
/** One request ends in an error (the run's first is kept as said). */
void noteError(const char *format, ...) __attribute__((format(printf, 1, 2)));
/** Request `i` was answered right at `now`: its latency from its due time is kept if measured. */
void noteAnswered(long i, int64_t now);
/**
 * Writes what is left of `buf` (from *at to len) to the non-blocking socket `fd`: 1 when all of it
 * went, 0 when the socket took only part (wait for EPOLLOUT), -1 on a failure (errno; 0: nothing written).
 */
int writeRest(int fd, const void *buf, size_t len, size_t *at);
/** A non-blocking connect's outcome once its socket reports: 0, or the errno it failed with. */
int connectResult(int fd);
/** Appends to the answer line; flushLine ends and writes it (exits when the bench is gone). */
void emit(const char *format, ...) __attribute__((format(printf, 1, 2)));
void flushLine(void);
/** Answers a command with {"error":"..."}. */
void answerError(const char *format, ...) __attribute__((format(printf, 1, 2)));

// The generator's part.
/** The prefix of its messages on stderr ("openloop"). */
extern const char *const loopName;
/** Target `id` is registered. */
int loopHasTarget(long id);
/** Hands the run's waiting requests [run.queued, run.next) to target `id`'s connections, in order, as far as it can. */
void loopDispatch(long id, int64_t now);
/** An epoll event of one of its sockets (`ptr` as it registered it; never NULL). */
void loopOnEvent(void *ptr, uint32_t events, int64_t now);
/** The run gives up: target `id`'s connections with requests on them are closed (the core counts the requests as errors). */
void loopAbandon(long id);
/** A command line other than `run` (registering a target, say): it answers one line. */
void loopCommand(char *line);

#endif
