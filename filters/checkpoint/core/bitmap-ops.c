/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's dirty bitmap operations, each undoable (see bitmap-ops.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "core/limits.h"

static bool persistence;

void
bitmaps_set_persistence (bool available)
{
  persistence = available;
}

bool
bitmaps_persistence (void)
{
  return persistence;
}

static int
out_of_memory (struct qmp_error *err)
{
  qmp_error (err, "out of memory");
  return -1;
}

struct dirty_bitmap *
bitmaps_find (struct node *n, const char *name)
{
  struct dirty_bitmap *d;

  for (d = n->bitmaps; d; d = d->next)
    if (strcmp (d->name, name) == 0)
      return d;
  return NULL;
}

struct dirty_bitmap *
bitmaps_lookup (const char *node, const char *name, bool change,
                struct node **np, struct qmp_error *err)
{
  struct node *n = nodes_find (node);
  struct dirty_bitmap *d;

  /* QEMU 7.2's text for every bitmap command but add (nodes_lookup's). */
  if (n == NULL) {
    qmp_error (err, "Node '%s' not found", node);
    return NULL;
  }
  d = bitmaps_find (n, name);
  if (d == NULL) {
    qmp_error (err, "Dirty bitmap '%s' not found", name);
    return NULL;
  }
  if (change && dirty_bitmap_busy (d)) {
    qmp_error (err, "Bitmap '%s' is currently in use by another operation "
               "and cannot be used", name);
    return NULL;
  }
  if (change && d->inconsistent) {
    qmp_error (err, "Bitmap '%s' is inconsistent and cannot be used", name);
    return NULL;
  }
  if (np)
    *np = n;
  return d;
}

/* Most undo records name a node and a bitmap. */
struct bitmap_undo {
  struct node *node;
  struct dirty_bitmap *d;
  struct bitmap *old;           /* clear and merge: the bits before */
  bool undone;
};

static struct bitmap_undo *
undo_new (struct node *n, struct dirty_bitmap *d)
{
  struct bitmap_undo *u = calloc (1, sizeof *u);

  if (u) {
    u->node = n;
    u->d = d;
  }
  return u;
}

static void
unlink_bitmap (struct node *n, struct dirty_bitmap *d)
{
  struct dirty_bitmap **pp;

  for (pp = &n->bitmaps; *pp; pp = &(*pp)->next)
    if (*pp == d) {
      *pp = d->next;
      d->next = NULL;
      break;
    }
  node_update_recording (n);
}

/* Adding: unlinked again by undo, freed only then. */
static void
undo_insert (void *p)
{
  struct bitmap_undo *u = p;

  unlink_bitmap (u->node, u->d);
  u->undone = true;
}

static void
clean_insert (void *p)
{
  struct bitmap_undo *u = p;

  if (u->undone)
    dirty_bitmap_free (u->d);
  free (u);
}

static const struct txn_step_ops insert_ops = {
  .undo = undo_insert, .clean = clean_insert,
};

static bool
check_name (const char *name, struct qmp_error *err)
{
  if (name[0] == '\0') {
    qmp_error (err, "Bitmap name cannot be empty");
    return false;
  }
  if (strlen (name) > BITMAP_NAME_MAX) {
    qmp_error (err, "Bitmap name too long: %s", name);
    return false;
  }
  return true;
}

static bool
check_new (struct node *n, const char *name, uint32_t granularity,
           bool persistent, struct qmp_error *err)
{
  if (!check_name (name, err))
    return false;
  if (bitmaps_find (n, name)) {
    qmp_error (err, "Bitmap already exists: %s", name);
    return false;
  }
  if (granularity < BITMAP_MIN_GRANULARITY ||
      (granularity & (granularity - 1)) != 0) {
    qmp_error (err, "Granularity must be power of 2 and at least 512");
    return false;
  }
  if (persistent && !persistence) {
    qmp_error (err, "Can't store persistent bitmaps to %s: no state "
               "directory (state=) was given", n->name);
    return false;
  }
  return true;
}

int
bitmaps_add (struct txn *t, struct node *n, const char *name,
             uint32_t granularity, bool persistent, bool disabled,
             struct qmp_error *err)
{
  struct dirty_bitmap *d;
  struct bitmap_undo *u;
  unsigned nr = 0;

  if (!check_new (n, name, granularity, persistent, err))
    return -1;
  /* Bounds the memory of clean bitmaps and the work of every save. */
  for (d = n->bitmaps; d; d = d->next)
    nr++;
  if (nr >= limits.bitmaps_per_disk) {
    qmp_error (err, "Cannot add bitmap '%s' to '%s': it has %u bitmaps, "
               "the limit (max-bitmaps-per-disk=%u); remove unused ones "
               "first", name, n->name, nr, limits.bitmaps_per_disk);
    return -1;
  }
  d = dirty_bitmap_new (name, n->size, granularity);
  if (d == NULL) {
    qmp_error (err, "Cannot allocate bitmap %s: %s", name, strerror (errno));
    return -1;
  }
  d->persistent = persistent;
  d->recording = !disabled;
  d->version = 1;               /* never saved */
  /* Room in the recording set first: updating it never fails. */
  if ((u = undo_new (n, d)) == NULL || node_reserve_recording (n, 1) == -1) {
    free (u);
    dirty_bitmap_free (d);
    return out_of_memory (err);
  }
  d->next = n->bitmaps;
  n->bitmaps = d;
  node_update_recording (n);
  return txn_add (t, &insert_ops, u) == -1 ? out_of_memory (err) : 0;
}

/* Removal takes effect when the txn commits, as in QEMU: until then
 * the bitmap is still there and busy, so that a later action of the
 * same transaction cannot reuse its name or change it.  Commit runs
 * before the barrier is lowered, so no write sees it go.
 */
static void
undo_remove (void *p)
{
  struct bitmap_undo *u = p;

  u->d->users--;
  u->d->removing = false;
}

static void
commit_remove (void *p)
{
  struct bitmap_undo *u = p;

  unlink_bitmap (u->node, u->d);
  dirty_bitmap_free (u->d);
}

static const struct txn_step_ops remove_ops = {
  .undo = undo_remove, .commit = commit_remove, .clean = free,
};

int
bitmaps_remove (struct txn *t, struct node *n, struct dirty_bitmap *d,
                struct qmp_error *err)
{
  struct bitmap_undo *u = undo_new (n, d);

  if (u == NULL)
    return out_of_memory (err);
  d->users++;
  d->removing = true;
  return txn_add (t, &remove_ops, u) == -1 ? out_of_memory (err) : 0;
}

static void
undo_inconsistent (void *p)
{
  struct bitmap_undo *u = p;

  u->d->inconsistent = false;
  node_update_recording (u->node);
}

static const struct txn_step_ops inconsistent_ops = {
  .undo = undo_inconsistent, .clean = free,
};

int
bitmaps_set_inconsistent (struct txn *t, struct node *n,
                          struct dirty_bitmap *d, struct qmp_error *err)
{
  struct bitmap_undo *u;

  if (d->inconsistent)
    return 0;
  if ((u = undo_new (n, d)) == NULL)
    return out_of_memory (err);
  d->inconsistent = true;
  node_update_recording (n);
  return txn_add (t, &inconsistent_ops, u) == -1 ? out_of_memory (err) : 0;
}

/* Clear and merge swap in new bits and keep the old ones for undo. */
static void
undo_swap (void *p)
{
  struct bitmap_undo *u = p;
  struct bitmap *tmp = u->d->bm;

  u->d->bm = u->old;
  u->old = tmp;
  u->d->version++;
  node_update_recording (u->node);
}

static void
clean_swap (void *p)
{
  struct bitmap_undo *u = p;

  bitmap_free (u->old);
  free (u);
}

static const struct txn_step_ops swap_ops = {
  .undo = undo_swap, .clean = clean_swap,
};

static int
swap_in (struct txn *t, struct node *n, struct dirty_bitmap *d,
         struct bitmap *bm, struct qmp_error *err)
{
  struct bitmap_undo *u = undo_new (n, d);

  if (u == NULL) {
    bitmap_free (bm);
    return out_of_memory (err);
  }
  u->old = d->bm;
  d->bm = bm;
  d->version++;
  node_update_recording (n);
  return txn_add (t, &swap_ops, u) == -1 ? out_of_memory (err) : 0;
}

int
bitmaps_clear (struct txn *t, struct node *n, struct dirty_bitmap *d,
               struct qmp_error *err)
{
  struct bitmap *bm = bitmap_new (bitmap_size (d->bm),
                                  bitmap_granularity (d->bm));

  return bm ? swap_in (t, n, d, bm, err) : out_of_memory (err);
}

int
bitmaps_merge (struct txn *t, struct node *n, struct dirty_bitmap *target,
               const struct bitmap *src, struct qmp_error *err)
{
  struct bitmap *bm = bitmap_copy (target->bm);

  if (bm == NULL || bitmap_merge (bm, src) == -1) {
    bitmap_free (bm);
    return out_of_memory (err);
  }
  if (!target->recording)
    bitmap_compact (bm);        /* only to save memory: may fail */
  return swap_in (t, n, target, bm, err);
}

static void
undo_recording (void *p)
{
  struct bitmap_undo *u = p;

  u->d->recording = !u->d->recording;
  u->d->version++;
  node_update_recording (u->node);
}

static const struct txn_step_ops recording_ops = {
  .undo = undo_recording, .clean = free,
};

int
bitmaps_set_recording (struct txn *t, struct node *n,
                       struct dirty_bitmap *d, bool on, struct qmp_error *err)
{
  struct bitmap_undo *u;

  if (d->recording == on)
    return 0;
  if ((u = undo_new (n, d)) == NULL)
    return out_of_memory (err);
  d->recording = on;
  d->version++;
  node_update_recording (n);
  /* A bitmap that stops recording only gets read: make it small. */
  if (!on)
    bitmap_compact (d->bm);
  return txn_add (t, &recording_ops, u) == -1 ? out_of_memory (err) : 0;
}

static void
undo_checkpoint (void *p)
{
  struct bitmap_undo *u = p;

  u->d->checkpoint = !u->d->checkpoint;
}

static const struct txn_step_ops checkpoint_ops = {
  .undo = undo_checkpoint, .clean = free,
};

int
bitmaps_set_checkpoint (struct txn *t, struct dirty_bitmap *d, bool on,
                        struct qmp_error *err)
{
  struct bitmap_undo *u;

  if (d->checkpoint == on)
    return 0;
  if ((u = undo_new (NULL, d)) == NULL)
    return out_of_memory (err);
  d->checkpoint = on;
  return txn_add (t, &checkpoint_ops, u) == -1 ? out_of_memory (err) : 0;
}
