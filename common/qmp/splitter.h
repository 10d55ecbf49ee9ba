/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Splits a QMP input stream into JSON values without parsing them, so
 * that limits (size, nesting) are enforced before the parser runs and
 * a bad value can be skipped.
 *
 * A value over a limit is reported the moment the limit is crossed,
 * not when it ends (it may never end), and the rest of it is skipped
 * keeping nothing but the bracket depth.  The stream resynchronises
 * at the end of that value, or at a control character (any byte below
 * 0x20 but tab, CR and LF, which JSON never allows unescaped; QMP
 * clients send one to reset the parser).  A skipped value that goes on
 * past max_skip bytes cannot be resynchronised: the feed fails.
 */
#ifndef NC_QMP_SPLITTER_H
#define NC_QMP_SPLITTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum splitter_status {
  SPLIT_VALUE,                  /* a complete value in data/len */
  SPLIT_TOO_LARGE,              /* over max_size: the rest is skipped */
  SPLIT_TOO_DEEP,               /* deeper than max_depth: likewise */
  SPLIT_STRAY,                  /* a closing bracket at top level */
  SPLIT_CONTROL,                /* a control character cut a value short */
  SPLIT_ENDLESS,                /* skipped past max_skip: feed fails */
};

/* What the splitter does after a callback. */
enum splitter_next {
  SPLIT_GO,                     /* go on */
  SPLIT_PAUSE,                  /* return now; the caller feeds the rest later */
  SPLIT_HALT,                   /* fail: the client is going away */
};

/* Called for each complete value, and for each error (then DATA is the
 * offending byte or NULL).
 */
typedef enum splitter_next (*splitter_fn) (void *opaque,
                                           enum splitter_status status,
                                           const char *data, size_t len);

struct splitter {
  size_t max_size, max_skip;
  int max_depth;
  char *buf;                    /* the value so far */
  size_t len, cap;
  size_t skipped;               /* bytes of the bad value skipped so far */
  int depth;
  bool active;                  /* inside a value */
  bool scalar;                  /* a bare scalar at top level */
  bool in_string, escape;
  bool skipping;                /* the value was reported: keep nothing */
  bool pause;                   /* the callback asked to pause */
};

extern void splitter_init (struct splitter *s, size_t max_size,
                           int max_depth, size_t max_skip);
extern void splitter_free (struct splitter *s);
/* Returns how many bytes of DATA were used: all of them, or fewer when
 * FN paused; -1 when FN halted, on SPLIT_ENDLESS, or on ENOMEM.
 */
extern ssize_t splitter_feed (struct splitter *s, const char *data, size_t n,
                              splitter_fn fn, void *opaque);

#endif /* NC_QMP_SPLITTER_H */
