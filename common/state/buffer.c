/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>

#include "buffer.h"
#include "byteorder.h"

/* Make room for N more bytes, doubling so that appends are amortised
 * O(1).
 */
static int
reserve (struct state_buf *b, size_t n)
{
  size_t cap;
  uint8_t *p;

  if (b->err) {
    errno = b->err;
    return -1;
  }
  if (n <= b->cap - b->len)
    return 0;

  cap = b->cap ? b->cap : 64;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2) {
      b->err = errno = ENOMEM;
      return -1;
    }
    cap *= 2;
  }
  p = realloc (b->data, cap);
  if (p == NULL) {
    b->err = errno = ENOMEM;
    return -1;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int
state_put_bytes (struct state_buf *b, const void *p, size_t n)
{
  if (reserve (b, n) == -1)
    return -1;
  if (n > 0)
    memcpy (b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int
state_put_u8 (struct state_buf *b, uint8_t v)
{
  return state_put_bytes (b, &v, 1);
}

int
state_put_u32 (struct state_buf *b, uint32_t v)
{
  uint8_t d[4];

  le_store (d, v, sizeof d);
  return state_put_bytes (b, d, sizeof d);
}

int
state_put_u64 (struct state_buf *b, uint64_t v)
{
  uint8_t d[8];

  le_store (d, v, sizeof d);
  return state_put_bytes (b, d, sizeof d);
}

int
state_put_string (struct state_buf *b, const char *s)
{
  size_t n = strlen (s);

  if (n > UINT32_MAX) {
    if (!b->err)
      b->err = EOVERFLOW;
    errno = b->err;
    return -1;
  }
  /* Reserve both parts first so that a failure appends nothing. */
  if (reserve (b, 4 + n) == -1 ||
      state_put_u32 (b, n) == -1)
    return -1;
  return state_put_bytes (b, s, n);
}

void
state_buf_free (struct state_buf *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->err = 0;
}

void
state_reader_init (struct state_reader *r, const void *data, size_t len)
{
  r->p = data;
  r->left = len;
  r->err = 0;
}

int
state_get_span (struct state_reader *r, size_t n, const void **ptr)
{
  if (!r->err && n > r->left)
    r->err = EBADMSG;
  if (r->err) {
    errno = r->err;
    return -1;
  }
  *ptr = r->p;
  r->p += n;
  r->left -= n;
  return 0;
}

int
state_get_bytes (struct state_reader *r, void *out, size_t n)
{
  const void *p;

  if (state_get_span (r, n, &p) == -1)
    return -1;
  if (n > 0)
    memcpy (out, p, n);
  return 0;
}

int
state_get_u8 (struct state_reader *r, uint8_t *v)
{
  return state_get_bytes (r, v, 1);
}

int
state_get_u32 (struct state_reader *r, uint32_t *v)
{
  const void *p;

  if (state_get_span (r, 4, &p) == -1)
    return -1;
  *v = le_load (p, 4);
  return 0;
}

int
state_get_u64 (struct state_reader *r, uint64_t *v)
{
  const void *p;

  if (state_get_span (r, 8, &p) == -1)
    return -1;
  *v = le_load (p, 8);
  return 0;
}

int
state_get_string (struct state_reader *r, char **s)
{
  struct state_reader save = *r;
  uint32_t n;
  const void *p;
  char *copy;

  /* The length is checked against the input before allocating.  A
   * failure consumes nothing, not even the length (found by
   * fuzz/fuzz-state-buffer).
   */
  if (state_get_u32 (r, &n) == -1)
    return -1;
  if (state_get_span (r, n, &p) == -1) {
    int err = r->err;

    *r = save;
    r->err = errno = err;
    return -1;
  }
  if (memchr (p, 0, n) != NULL) {
    *r = save;
    r->err = errno = EBADMSG;
    return -1;
  }
  copy = malloc ((size_t) n + 1);
  if (copy == NULL) {
    *r = save;
    r->err = errno = ENOMEM;
    return -1;
  }
  memcpy (copy, p, n);
  copy[n] = '\0';
  *s = copy;
  return 0;
}

int
state_reader_end (struct state_reader *r)
{
  if (!r->err && r->left > 0)
    r->err = EBADMSG;
  if (r->err) {
    errno = r->err;
    return -1;
  }
  return 0;
}
