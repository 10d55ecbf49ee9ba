/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: the state payload decoder (common/state buffer.c).
 *
 * The input is a program and its data: byte 0 is the number N of
 * operation bytes that follow, the rest is the data read by them.
 * Each operation decodes one item (u8, u32, u64, bytes, span, string).
 * Checked: a failure is sticky, nothing is read past the end, strings
 * are NUL-free copies of the right length, and what was decoded, once
 * encoded again with the state_put functions, gives back exactly the
 * bytes consumed.
 */
#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct state_reader r;
  struct state_buf b = STATE_BUF_INIT;
  const uint8_t *ops, *in;
  size_t nops, n, i, consumed;
  bool failed = false;

  if (size == 0)
    return 0;
  nops = data[0];
  if (nops > size - 1)
    nops = size - 1;
  ops = data + 1;
  in = ops + nops;
  n = size - 1 - nops;

  state_reader_init (&r, in, n);
  for (i = 0; i < nops; i++) {
    size_t before = r.left;
    int ret = 0;
    uint8_t u8;
    uint32_t u32;
    uint64_t u64;
    uint8_t bytes[64];
    const void *span;
    char *s = NULL;
    size_t len = ops[i] >> 3;   /* for bytes and span */

    switch (ops[i] & 7) {
    case 0:
      if ((ret = state_get_u8 (&r, &u8)) == 0)
        state_put_u8 (&b, u8);
      break;
    case 1:
      if ((ret = state_get_u32 (&r, &u32)) == 0)
        state_put_u32 (&b, u32);
      break;
    case 2:
      if ((ret = state_get_u64 (&r, &u64)) == 0)
        state_put_u64 (&b, u64);
      break;
    case 3:
      if (len > sizeof bytes)
        len = sizeof bytes;
      if ((ret = state_get_bytes (&r, bytes, len)) == 0)
        state_put_bytes (&b, bytes, len);
      break;
    case 4:
      if ((ret = state_get_span (&r, len, &span)) == 0) {
        if ((const uint8_t *) span < in ||
            (const uint8_t *) span + len > in + n)
          abort ();
        state_put_bytes (&b, span, len);
      }
      break;
    default:
      if ((ret = state_get_string (&r, &s)) == 0) {
        if (strlen (s) != before - r.left - 4)
          abort ();             /* a NUL inside, or a wrong length */
        state_put_string (&b, s);
        free (s);
      }
      break;
    }
    if (ret == 0 && failed)
      abort ();                 /* success after a failure */
    if (ret == -1) {
      failed = true;
      if (r.left != before)
        abort ();               /* a failed call consumed input */
    }
    if (r.left > n)
      abort ();
  }
  consumed = n - r.left;
  if (b.err || b.len != consumed || (consumed && memcmp (b.data, in, consumed)))
    abort ();
  if ((state_reader_end (&r) == 0) != (!failed && r.left == 0))
    abort ();
  state_buf_free (&b);
  return 0;
}
