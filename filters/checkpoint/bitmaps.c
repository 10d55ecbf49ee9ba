#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "bitmaps.h"
#include "persist.h"

void
dirty_bitmap_free (struct dirty_bitmap *d)
{
  if (d) {
    bitmap_free (d->bm);
    free (d->name);
    free (d);
  }
}

struct node *
bitmaps_node (const char *name, struct qmp_error *err)
{
  struct node *n = nodes_find (name);

  if (n == NULL)
    qmp_error (err, "Cannot find device='%s' nor node-name='%s'", name, name);
  return n;
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
  struct node *n = bitmaps_node (node, err);
  struct dirty_bitmap *d;

  if (n == NULL)
    return NULL;
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

/* Undo of an insert: unlink D (the newest, or anywhere). */
struct insert_undo {
  struct node *node;
  struct dirty_bitmap *d;
  bool undone;
};

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
  nodes_update_recording (n);
}

static void
link_bitmap (struct node *n, struct dirty_bitmap *d)
{
  d->next = n->bitmaps;
  n->bitmaps = d;
  nodes_update_recording (n);
}

static void
undo_insert (void *p)
{
  struct insert_undo *u = p;

  unlink_bitmap (u->node, u->d);
  u->undone = true;
}

static void
done_insert (void *p)
{
  struct insert_undo *u = p;

  if (u->undone)
    dirty_bitmap_free (u->d);
  free (u);
}

static int
bitmaps_insert (struct txn *t, struct node *n, struct dirty_bitmap *d)
{
  struct insert_undo *u = malloc (sizeof *u);

  /* Room in the recording array first: updating it never fails. */
  if (u == NULL || nodes_reserve_recording (n, 1) == -1) {
    free (u);
    return -1;
  }
  link_bitmap (n, d);
  *u = (struct insert_undo) { n, d, false };
  return txn_push (t, undo_insert, done_insert, u);
}

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

int
bitmaps_add (struct txn *t, struct node *n, const char *name,
             uint32_t granularity, bool persistent, bool disabled,
             struct qmp_error *err)
{
  struct dirty_bitmap *d;

  if (!check_name (name, err))
    return -1;
  if (bitmaps_find (n, name)) {
    qmp_error (err, "Bitmap already exists: %s", name);
    return -1;
  }
  if (granularity < BITMAP_MIN_GRANULARITY ||
      (granularity & (granularity - 1)) != 0) {
    qmp_error (err, "Granularity must be power of 2 and at least 512");
    return -1;
  }
  if (persistent && !persist_enabled ()) {
    qmp_error (err, "Can't store persistent bitmaps to %s: no state "
               "directory (state=) was given", n->name);
    return -1;
  }
  d = calloc (1, sizeof *d);
  if (d == NULL || (d->name = strdup (name)) == NULL ||
      (d->bm = bitmap_new (n->size, granularity)) == NULL) {
    dirty_bitmap_free (d);
    qmp_error (err, "Cannot allocate bitmap %s: %s", name, strerror (errno));
    return -1;
  }
  d->persistent = persistent;
  d->recording = !disabled;
  if (bitmaps_insert (t, n, d) == -1) {
    dirty_bitmap_free (d);
    qmp_error (err, "out of memory");
    return -1;
  }
  return 0;
}

/* Removal takes effect when the txn commits, as in QEMU: until then
 * the bitmap is still there and busy, so that a later action of the
 * same transaction cannot reuse its name or change it.
 */
struct remove_undo {
  struct node *node;
  struct dirty_bitmap *d;
  bool undone;
};

static void
undo_remove (void *p)
{
  struct remove_undo *u = p;

  u->d->users--;
  u->undone = true;
}

/* Runs before the barrier is lowered, so no write sees it go. */
static void
done_remove (void *p)
{
  struct remove_undo *u = p;

  if (!u->undone) {
    unlink_bitmap (u->node, u->d);
    dirty_bitmap_free (u->d);
  }
  free (u);
}

int
bitmaps_remove (struct txn *t, struct node *n, struct dirty_bitmap *d)
{
  struct remove_undo *u = malloc (sizeof *u);

  if (u == NULL)
    return -1;
  *u = (struct remove_undo) { n, d, false };
  d->users++;
  return txn_push (t, undo_remove, done_remove, u);
}

/* Mark D inconsistent (undone with the txn). */
struct flag_undo {
  struct node *node;
  struct dirty_bitmap *d;
};

static void
undo_inconsistent (void *p)
{
  struct flag_undo *u = p;

  u->d->inconsistent = false;
  nodes_update_recording (u->node);
}

int
bitmaps_set_inconsistent (struct txn *t, struct node *n,
                          struct dirty_bitmap *d)
{
  struct flag_undo *u;

  if (d->inconsistent)
    return 0;
  u = malloc (sizeof *u);
  if (u == NULL)
    return -1;
  *u = (struct flag_undo) { n, d };
  d->inconsistent = true;
  nodes_update_recording (n);
  return txn_push (t, undo_inconsistent, free, u);
}

/* Clear and merge swap in a new bitmap and keep the old one for undo. */
struct swap_undo {
  struct node *node;
  struct dirty_bitmap *d;
  struct bitmap *old;
};

static void
undo_swap (void *p)
{
  struct swap_undo *u = p;
  struct bitmap *tmp = u->d->bm;

  u->d->bm = u->old;
  u->old = tmp;
  nodes_update_recording (u->node);
}

static void
done_swap (void *p)
{
  struct swap_undo *u = p;

  bitmap_free (u->old);
  free (u);
}

static int
swap_in (struct txn *t, struct node *n, struct dirty_bitmap *d,
         struct bitmap *bm)
{
  struct swap_undo *u = malloc (sizeof *u);

  if (u == NULL) {
    bitmap_free (bm);
    return -1;
  }
  *u = (struct swap_undo) { n, d, d->bm };
  d->bm = bm;
  nodes_update_recording (n);
  return txn_push (t, undo_swap, done_swap, u);
}

int
bitmaps_clear (struct txn *t, struct node *n, struct dirty_bitmap *d)
{
  struct bitmap *bm = bitmap_new (bitmap_size (d->bm),
                                  bitmap_granularity (d->bm));

  return bm ? swap_in (t, n, d, bm) : -1;
}

int
bitmaps_merge (struct txn *t, struct node *n, struct dirty_bitmap *target,
               const struct bitmap *src)
{
  struct bitmap *bm = bitmap_copy (target->bm);

  if (bm == NULL || bitmap_merge (bm, src) == -1) {
    bitmap_free (bm);
    return -1;
  }
  if (!target->recording)
    bitmap_compact (bm);        /* only to save memory: may fail */
  return swap_in (t, n, target, bm);
}

struct recording_undo {
  struct node *node;
  struct dirty_bitmap *d;
};

static void
undo_recording (void *p)
{
  struct recording_undo *u = p;

  u->d->recording = !u->d->recording;
  nodes_update_recording (u->node);
}

int
bitmaps_set_recording (struct txn *t, struct node *n,
                       struct dirty_bitmap *d, bool on)
{
  struct recording_undo *u;

  if (d->recording == on)
    return 0;
  u = malloc (sizeof *u);
  if (u == NULL)
    return -1;
  *u = (struct recording_undo) { n, d };
  d->recording = on;
  nodes_update_recording (n);
  /* A bitmap that stops recording only gets read: make it small. */
  if (!on)
    bitmap_compact (d->bm);
  return txn_push (t, undo_recording, free, u);
}

json_t *
bitmaps_describe (struct node *n)
{
  json_t *list = json_array ();
  struct dirty_bitmap *d;

  for (d = n->bitmaps; d; d = d->next)
    json_array_append_new (list, json_pack (
      "{s:s,s:I,s:I,s:b,s:b,s:b,s:b}",
      "name", d->name,
      "granularity", (json_int_t) bitmap_granularity (d->bm),
      "count", (json_int_t) (d->inconsistent ? 0 : bitmap_count_bytes (d->bm)),
      "recording", d->recording && !d->inconsistent,
      "persistent", d->persistent,
      "busy", dirty_bitmap_busy (d),
      "inconsistent", d->inconsistent));
  return list;
}
