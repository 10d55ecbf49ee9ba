/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "core/dirty-bitmap.h"

struct dirty_bitmap *
dirty_bitmap_new (const char *name, uint64_t size, uint32_t granularity)
{
  struct dirty_bitmap *d = calloc (1, sizeof *d);

  if (d == NULL || (d->name = strdup (name)) == NULL ||
      (d->bm = bitmap_new (size, granularity)) == NULL) {
    dirty_bitmap_free (d);
    return NULL;
  }
  return d;
}

void
dirty_bitmap_free (struct dirty_bitmap *d)
{
  if (d) {
    bitmap_free (d->bm);
    free (d->name);
    free (d);
  }
}
