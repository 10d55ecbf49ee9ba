/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Reads of a frozen view (see snapshot-access.h). */
#include <config.h>

#include <errno.h>
#include <inttypes.h>

#include "rounding.h"
#include "bitmap.h"
#include "engines/snapshot-access.h"

static void
cleanup_extents_free (struct nbdkit_extents **ptr)
{
  if (*ptr)
    nbdkit_extents_free (*ptr);
}
#define CLEANUP_EXTENTS_FREE __attribute__ ((cleanup (cleanup_extents_free)))

int
snapshot_pread (struct cbw *c, nbdkit_next *next, void *buf,
                uint32_t count, uint64_t offset, int *err)
{
  if (block_copy_read (cbw_block_copy (c), next, buf, count, offset,
                       err) == -1)
    return -1;
  /* After the read: a write that raced with it shows here (it is
   * recorded before it lands).
   */
  if (cbw_unneeded_changed (c, offset, count)) {
    nbdkit_error ("checkpoint: %s: [%" PRIu64 ", +%" PRIu32 ") is not in "
                  "the incremental backup and has changed since",
                  cbw_owner_name (c), offset, count);
    *err = EIO;
    return -1;
  }
  return 0;
}

/* Add [POS, END) of plugin extent type TYPE, split where the frozen
 * view differs: unneeded chunks are holes without zero, saved blocks
 * are data.
 */
static int
add_frozen (struct cbw *c, struct nbdkit_extents *out,
            uint64_t pos, uint64_t end, uint32_t type)
{
  const struct bitmap *needed = cbw_needed (c);
  const struct block_copy *bc = cbw_block_copy (c);

  while (pos < end) {
    uint64_t next_pos = MIN (bitmap_run_end (needed, pos, end),
                             block_copy_saved_run_end (bc, pos, end));
    uint32_t t = type;

    if (needed && !bitmap_test (needed, pos))
      t = NBDKIT_EXTENT_HOLE;
    else if (block_copy_is_saved (bc, pos))
      t = 0;
    if (nbdkit_add_extent (out, pos, next_pos - pos, t) == -1)
      return -1;
    pos = next_pos;
  }
  return 0;
}

int
snapshot_extents (struct cbw *c, nbdkit_next *next, uint32_t count,
                  uint64_t offset, uint32_t flags,
                  struct nbdkit_extents *extents, int *err)
{
  uint64_t end = MIN (offset + count, cbw_size (c));
  CLEANUP_EXTENTS_FREE struct nbdkit_extents *plugin = NULL;
  size_t i;

  if (!next->can_extents (next)) {
    if (add_frozen (c, extents, offset, end, 0) == -1) {
      *err = errno;
      return -1;
    }
    return 0;
  }
  plugin = nbdkit_extents_new (offset, end);
  if (plugin == NULL) {
    *err = errno;
    return -1;
  }
  if (next->extents (next, end - offset, offset, flags & ~NBDKIT_FLAG_REQ_ONE,
                     plugin, err) == -1)
    return -1;
  for (i = 0; i < nbdkit_extents_count (plugin); i++) {
    struct nbdkit_extent e = nbdkit_get_extent (plugin, i);
    uint64_t s = MAX (e.offset, offset), f = MIN (e.offset + e.length, end);
    if (s < f && add_frozen (c, extents, s, f, e.type) == -1) {
      *err = errno;
      return -1;
    }
  }
  return 0;
}
