/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: the QMP stream splitter (common/qmp/splitter.c) fed
 * arbitrary bytes.  Besides the sanitizers, it checks that splitting
 * does not depend on how the stream is cut into reads: the input fed
 * at once and fed in pieces (sizes taken from the input's first byte)
 * must give the same values, each within the limits.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "splitter.h"

/* Small limits, so that inputs reach them. */
#define MAX_SIZE 512
#define MAX_DEPTH 8
#define MAX_SKIP 4096

struct record {
  char *text;                   /* status byte, then the value */
  size_t len, cap;
};

static enum splitter_next
collect (void *opaque, enum splitter_status status,
         const char *data, size_t len)
{
  struct record *r = opaque;

  if (status == SPLIT_VALUE && (len == 0 || len > MAX_SIZE))
    abort ();                   /* a value is never empty or too large */
  if (r->len + len + 2 > r->cap) {
    r->cap = (r->len + len + 2) * 2;
    r->text = realloc (r->text, r->cap);
    if (r->text == NULL)
      abort ();
  }
  r->text[r->len++] = '0' + status;
  if (status == SPLIT_VALUE) {
    memcpy (r->text + r->len, data, len);
    r->len += len;
  }
  r->text[r->len++] = '\n';
  return SPLIT_GO;
}

static void
split (const uint8_t *data, size_t size, size_t piece, struct record *r)
{
  struct splitter s;
  size_t i;

  splitter_init (&s, MAX_SIZE, MAX_DEPTH, MAX_SKIP);
  for (i = 0; i < size; i += piece) {
    size_t n = size - i < piece ? size - i : piece;
    ssize_t used = splitter_feed (&s, (const char *) data + i, n, collect, r);
    /* A value skipped past MAX_SKIP ends the stream (it was reported
     * as SPLIT_ENDLESS, at the same byte however the input is cut).
     */
    if (used == -1)
      break;
    if ((size_t) used != n)
      abort ();                 /* collect never pauses */
  }
  splitter_free (&s);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct record whole = { 0 }, pieces = { 0 };
  size_t piece;

  if (size == 0)
    return 0;
  piece = data[0] % 7 + 1;
  data++, size--;
  split (data, size, size ? size : 1, &whole);
  split (data, size, piece, &pieces);
  if (whole.len != pieces.len ||
      (whole.len && memcmp (whole.text, pieces.text, whole.len) != 0)) {
    fprintf (stderr, "split differently in pieces of %zu\n", piece);
    abort ();
  }
  free (whole.text);
  free (pieces.text);
  return 0;
}
