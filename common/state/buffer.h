/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Little-endian encoding and decoding of state payloads.
 *
 * Writing: a growable byte buffer.  Reading: a cursor over a byte
 * array that refuses to run past its end.  Both remember their first
 * error: after a failure every later call fails too, so a caller may
 * check each call or only the last one.  Strings are encoded as a u32
 * length followed by the bytes, without a terminating NUL.
 */
#ifndef NC_STATE_BUFFER_H
#define NC_STATE_BUFFER_H

#include <stddef.h>
#include <stdint.h>

struct state_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
  int err;                      /* first errno seen, 0 if none */
};
#define STATE_BUF_INIT { .data = NULL, .len = 0, .cap = 0, .err = 0 }

/* Append to B.  Return 0, or -1 with errno ENOMEM (or EOVERFLOW for a
 * string longer than UINT32_MAX).
 */
extern int state_put_u8 (struct state_buf *b, uint8_t v);
extern int state_put_u32 (struct state_buf *b, uint32_t v);
extern int state_put_u64 (struct state_buf *b, uint64_t v);
extern int state_put_bytes (struct state_buf *b, const void *p, size_t n);
extern int state_put_string (struct state_buf *b, const char *s);

/* Free the contents of B and reset it to STATE_BUF_INIT. */
extern void state_buf_free (struct state_buf *b);

struct state_reader {
  const uint8_t *p;
  size_t left;
  int err;                      /* first errno seen, 0 if none */
};

extern void state_reader_init (struct state_reader *r,
                               const void *data, size_t len);

/* Consume from R.  Return 0, or -1 with errno EBADMSG if the input is
 * too short (or a string holds a NUL byte), ENOMEM if a string cannot
 * be allocated.  Nothing is stored on failure.
 */
extern int state_get_u8 (struct state_reader *r, uint8_t *v);
extern int state_get_u32 (struct state_reader *r, uint32_t *v);
extern int state_get_u64 (struct state_reader *r, uint64_t *v);
extern int state_get_bytes (struct state_reader *r, void *out, size_t n);

/* Point *PTR at the next N bytes of the input without copying them. */
extern int state_get_span (struct state_reader *r, size_t n,
                           const void **ptr);

/* Set *S to a malloc'ed, NUL-terminated copy of the next string. */
extern int state_get_string (struct state_reader *r, char **s);

/* Return 0 if every call succeeded and the input is used up, else -1
 * with errno (EBADMSG for trailing bytes).
 */
extern int state_reader_end (struct state_reader *r);

#endif /* NC_STATE_BUFFER_H */
