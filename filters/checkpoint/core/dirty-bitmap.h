/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A named dirty bitmap of a node (QEMU's BdrvDirtyBitmap): the bits
 * (common/bitmap) and what QMP says about them.  The operations that
 * change a node's bitmaps, undoably, are in bitmap-ops.h.
 */
#ifndef CHECKPOINT_CORE_DIRTY_BITMAP_H
#define CHECKPOINT_CORE_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct bitmap;

#define DEFAULT_GRANULARITY 65536
#define BITMAP_NAME_MAX 1023

struct dirty_bitmap {
  struct dirty_bitmap *next;    /* newest first, as QEMU lists them */
  char *name;
  struct bitmap *bm;
  bool recording;
  bool persistent;
  bool inconsistent;            /* not saved cleanly: unusable */
  bool checkpoint;              /* the bitmap of the checkpoint of its name */
  unsigned users;               /* backups and jobs reading it */
  bool removing;                /* removed when its txn commits */
  /* Bumped by every change of the bits other than guest writes (and
   * their undo), so that persistence saves only what changed; it keeps
   * the version it saved last in saved_version.
   */
  uint64_t version;
  uint64_t saved_version;
};

/* Busy bitmaps refuse the low-level commands. */
static inline bool
dirty_bitmap_busy (const struct dirty_bitmap *d)
{
  return d->checkpoint || d->users > 0;
}

/* Does it mark guest writes? */
static inline bool
dirty_bitmap_records (const struct dirty_bitmap *d)
{
  return d->recording && !d->inconsistent;
}

/* A clean bitmap NAME over SIZE bytes; NULL with errno on error. */
extern struct dirty_bitmap *dirty_bitmap_new (const char *name,
                                              uint64_t size,
                                              uint32_t granularity);
extern void dirty_bitmap_free (struct dirty_bitmap *d);

#endif /* CHECKPOINT_CORE_DIRTY_BITMAP_H */
