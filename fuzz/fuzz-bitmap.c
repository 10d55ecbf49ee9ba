/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* libFuzzer target: bitmap deserialisation (common/bitmap
 * bitmap_deserialize).  A buffer is either refused or gives a bitmap
 * whose serialisation is the same buffer (the format is canonical),
 * whose dirty count matches a walk of its extents, and whose copy and
 * compact form hold the same bits.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "byteorder.h"

/* Disks larger than this (at any granularity) are not tried: the
 * page directory alone of a bitmap of 2^63 bytes in 512-byte chunks
 * needs terabytes, bitmap_new fails with ENOMEM then, and the fuzzer
 * would only measure the allocator.
 */
#define MAX_DIR_WORDS (UINT64_C (1) << 20)

static uint64_t
walk_count (const struct bitmap *bm)
{
  uint64_t pos = 0, start, end, chunks = 0;
  uint32_t g = bitmap_granularity (bm);

  while (bitmap_find (bm, pos, true, &start)) {
    if (!bitmap_find (bm, start, false, &end))
      end = bitmap_size (bm);
    if (end <= start || start % g != 0)
      abort ();
    chunks += (end - start + g - 1) / g;
    pos = end;
    if (pos >= bitmap_size (bm))
      break;
  }
  return chunks;
}

static void
same_bits (const struct bitmap *a, const struct bitmap *b)
{
  char ha[65], hb[65];

  if (bitmap_sha256 (a, ha) == -1 || bitmap_sha256 (b, hb) == -1)
    abort ();
  if (strcmp (ha, hb) != 0 ||
      bitmap_count_chunks (a) != bitmap_count_chunks (b))
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct bitmap *bm, *copy;
  void *buf;
  size_t len;

  if (size >= 24) {
    uint32_t g = le_load (data + 12, 4);
    uint64_t disk = le_load (data + 16, 8);

    if (g >= 512 && disk / g / 64 / 512 > MAX_DIR_WORDS)
      return 0;
  }
  bm = bitmap_deserialize (data, size);
  if (bm == NULL) {
    if (errno != EINVAL && errno != ENOMEM)
      abort ();
    return 0;
  }
  if (bitmap_serialize (bm, &buf, &len) == -1)
    abort ();
  if (len != size || memcmp (buf, data, size) != 0) {
    fprintf (stderr, "serialised again differently (%zu bytes, not %zu)\n",
             len, size);
    abort ();
  }
  free (buf);
  if (walk_count (bm) != bitmap_count_chunks (bm))
    abort ();
  copy = bitmap_copy (bm);
  if (copy == NULL || bitmap_compact (copy) == -1)
    abort ();
  same_bits (bm, copy);
  bitmap_free (copy);
  bitmap_free (bm);
  return 0;
}
