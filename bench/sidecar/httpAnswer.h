// The reader of HTTP/1.1 answers for the sidecar bench's C load generator (httpAnswer.c; openLoop.c
// holds one per connection).
#ifndef HTTP_ANSWER_H
#define HTTP_ANSWER_H

#include <stddef.h>

/** The most bytes of a header block (and of trailers), of a chunk-size line, and of a body. */
#define ANSWER_MAX_HEAD 16384
#define ANSWER_MAX_CHUNK_LINE 1024
#define ANSWER_MAX_BODY (1 << 20)

/** Where the reader is in an answer. */
enum AnswerPhase { HEAD, BODY_LENGTH, BODY_UNTIL_CLOSE, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILERS };

typedef struct Answer {
  enum AnswerPhase phase;
  int status;
  /** The server will close after it (connection: close, HTTP/1.0, a body until close). */
  int closeAfter;
  /** Bytes left of the body (Content-Length) or of the chunk. */
  long long remaining;
  long long body;
  /** Read bytes not yet parsed: a header block, a chunk-size line or trailers wait here whole. */
  size_t len;
  char buf[ANSWER_MAX_HEAD];
} Answer;

enum Parsed { NEED_MORE, COMPLETE, FAILED };

/** Ready for the next answer on the connection (bytes already buffered are kept). */
void answerReset(Answer *a);

/**
 * Parses buf[0, len), after the caller appended what it read: consumes what it can (the rest moved
 * to the front). COMPLETE: the answer is whole (bytes after it are left in buf); FAILED: *error
 * says why. After it, len < ANSWER_MAX_HEAD: there is always room to read into.
 */
enum Parsed answerParse(Answer *a, const char **error);

#endif
