/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Little-endian integers in byte arrays, for the on-disk formats of
 * common/state and common/bitmap.
 */
#ifndef NC_BYTEORDER_H
#define NC_BYTEORDER_H

#include <stddef.h>
#include <stdint.h>

/* Store the low N bytes of V at P, least significant first. */
static inline void
le_store (unsigned char *p, uint64_t v, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    p[i] = v >> (8 * i);
}

/* Load N bytes at P, least significant first. */
static inline uint64_t
le_load (const unsigned char *p, size_t n)
{
  uint64_t v = 0;
  size_t i;

  for (i = 0; i < n; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

#endif /* NC_BYTEORDER_H */
