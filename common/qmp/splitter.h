/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Splits a QMP input stream into JSON values without parsing them, so
 * that limits (size, nesting) are enforced before the parser runs and
 * a bad value can be skipped: the stream resynchronises at the end of
 * the value, as tracked by brackets outside strings.
 */
#ifndef NC_QMP_SPLITTER_H
#define NC_QMP_SPLITTER_H

#include <stdbool.h>
#include <stddef.h>

enum splitter_status {
  SPLIT_VALUE,                  /* a complete value in data/len */
  SPLIT_TOO_LARGE,              /* over max_size: skipped */
  SPLIT_TOO_DEEP,               /* nested deeper than max_depth: skipped */
  SPLIT_STRAY,                  /* a closing bracket at top level */
};

/* Called for each complete value (or skipped one).  Return false to
 * stop feeding (the client is going away).
 */
typedef bool (*splitter_fn) (void *opaque, enum splitter_status status,
                             const char *data, size_t len);

struct splitter {
  size_t max_size;
  int max_depth;
  char *buf;                    /* the value so far */
  size_t len, cap;
  int depth;
  bool active;                  /* inside a value */
  bool scalar;                  /* a bare scalar at top level */
  bool in_string, escape;
  bool too_large, too_deep;
};

extern void splitter_init (struct splitter *s, size_t max_size,
                           int max_depth);
extern void splitter_free (struct splitter *s);
/* Returns false if FN asked to stop, or on ENOMEM. */
extern bool splitter_feed (struct splitter *s, const char *data, size_t n,
                           splitter_fn fn, void *opaque);

#endif /* NC_QMP_SPLITTER_H */
