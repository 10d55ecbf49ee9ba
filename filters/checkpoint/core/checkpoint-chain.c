/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The checkpoint chain (see checkpoint-chain.h). */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "core/limits.h"

static struct checkpoint *checkpoints;  /* oldest first */
static struct checkpoint *current;
static uint64_t next_serial = 1;

DEFINE_VECTOR_TYPE (checkpoint_ptrs, struct checkpoint *);

static int
out_of_memory (struct qmp_error *err)
{
  qmp_error (err, "out of memory");
  return -1;
}

void
string_vector_free_all (string_vector *v)
{
  size_t i;

  for (i = 0; i < v->len; i++)
    free (v->ptr[i]);
  string_vector_reset (v);
}

struct checkpoint *
checkpoints_list (void)
{
  return checkpoints;
}

struct checkpoint *
checkpoints_current (void)
{
  return current;
}

void
checkpoints_set_current (struct checkpoint *c)
{
  current = c;
}

struct checkpoint *
checkpoints_find (const char *name)
{
  struct checkpoint *c;

  for (c = checkpoints; c; c = c->next)
    if (strcmp (c->name, name) == 0)
      return c;
  return NULL;
}

bool
checkpoint_covers (const struct checkpoint *c, const char *node)
{
  size_t i;

  for (i = 0; i < c->disks.len; i++)
    if (strcmp (c->disks.ptr[i], node) == 0)
      return true;
  return false;
}

static void
checkpoint_free (struct checkpoint *c)
{
  if (c == NULL)
    return;
  string_vector_free_all (&c->disks);
  free (c->name);
  free (c->description);
  free (c);
}

void
checkpoints_free_all (void)
{
  struct checkpoint *c;

  while ((c = checkpoints) != NULL) {
    checkpoints = c->next;
    checkpoint_free (c);
  }
  current = NULL;
}

static void
append (struct checkpoint *c)
{
  struct checkpoint **pp;

  for (pp = &checkpoints; *pp; pp = &(*pp)->next)
    ;
  *pp = c;
}

/* The newest checkpoint before C (NULL: the newest of all) that
 * covers NODE.
 */
static struct checkpoint *
previous_on (const struct checkpoint *c, const char *node)
{
  struct checkpoint *p, *found = NULL;

  for (p = checkpoints; p && p != c; p = p->next)
    if (checkpoint_covers (p, node))
      found = p;
  return found;
}

/* The bitmap of checkpoint P on N, if it can be read. */
static struct dirty_bitmap *
usable_bitmap (const struct checkpoint *p, struct node *n,
               struct qmp_error *err)
{
  struct dirty_bitmap *d = bitmaps_find (n, p->name);

  if (d == NULL || d->inconsistent)
    qmp_error (err, "Bitmap '%s' on '%s' is inconsistent and cannot be "
               "used: what changed since then on '%s' is unknown, a full "
               "backup is needed", p->name, n->name, n->name);
  return d && !d->inconsistent ? d : NULL;
}

struct bitmap *
checkpoints_changed_since (const struct checkpoint *c, struct node *n,
                           struct qmp_error *err)
{
  const struct checkpoint *p;
  struct dirty_bitmap *d = bitmaps_find (n, c->name);
  struct bitmap *bm;

  if (d == NULL || d->inconsistent) {
    qmp_error (err, "Bitmap '%s' of checkpoint '%s' on '%s' is %s: what "
               "changed since then is unknown, a full backup is needed",
               c->name, c->name, n->name,
               d ? "inconsistent and cannot be used" : "missing");
    return NULL;
  }
  bm = bitmap_new (n->size, bitmap_granularity (d->bm));
  if (bm == NULL) {
    out_of_memory (err);
    return NULL;
  }
  for (p = c; p; p = p->next) {
    if (!checkpoint_covers (p, n->name))
      continue;
    if ((d = usable_bitmap (p, n, err)) == NULL ||
        (bitmap_merge (bm, d->bm) == -1 && out_of_memory (err))) {
      bitmap_free (bm);
      return NULL;
    }
  }
  return bm;
}

/* Undo of any change to the list: the list, every parent and the
 * current checkpoint as they were, plus the checkpoint to free.
 */
struct list_undo {
  checkpoint_ptrs order;        /* the old list, in order */
  checkpoint_ptrs parents;      /* each one's old parent */
  struct checkpoint *current;
  struct checkpoint *added;     /* freed if undone */
  struct checkpoint *removed;   /* freed if committed */
  bool undone;
};

static void
undo_list (void *p)
{
  struct list_undo *u = p;
  size_t i;

  checkpoints = NULL;
  for (i = u->order.len; i-- > 0; ) {
    u->order.ptr[i]->next = checkpoints;
    u->order.ptr[i]->parent = u->parents.ptr[i];
    checkpoints = u->order.ptr[i];
  }
  current = u->current;
  u->undone = true;
}

/* Last, when no step can refer to the checkpoint any more. */
static void
clean_list (void *p)
{
  struct list_undo *u = p;

  checkpoint_free (u->undone ? u->added : u->removed);
  checkpoint_ptrs_reset (&u->order);
  checkpoint_ptrs_reset (&u->parents);
  free (u);
}

static const struct txn_step_ops list_ops = {
  .undo = undo_list, .clean = clean_list,
};

/* Save the list before changing it. */
static struct list_undo *
save_list (void)
{
  struct list_undo *u = calloc (1, sizeof *u);
  struct checkpoint *c;
  size_t n = 0;

  for (c = checkpoints; c; c = c->next)
    n++;
  if (u == NULL || checkpoint_ptrs_reserve (&u->order, n) == -1 ||
      checkpoint_ptrs_reserve (&u->parents, n) == -1) {
    if (u)
      clean_list (u);
    return NULL;
  }
  for (c = checkpoints; c; c = c->next) {
    checkpoint_ptrs_append (&u->order, c);
    checkpoint_ptrs_append (&u->parents, c->parent);
  }
  u->current = current;
  return u;
}

static bool
check_new_name (const char *name, struct qmp_error *err)
{
  if (name[0] == '\0' || strlen (name) > BITMAP_NAME_MAX) {
    qmp_error (err, "Checkpoint name must be 1 to %d bytes",
               BITMAP_NAME_MAX);
    return false;
  }
  if (checkpoints_find (name)) {
    qmp_error (err, "Checkpoint '%s' already exists", name);
    return false;
  }
  return true;
}

/* The node of the I-th name of a disk list: known, and not named
 * before in the list.
 */
static struct node *
listed_node (const string_vector *list, size_t i, struct qmp_error *err)
{
  struct node *n = nodes_lookup (list->ptr[i], err);
  size_t j;

  for (j = 0; n && j < i; j++)
    if (strcmp (list->ptr[i], list->ptr[j]) == 0) {
      qmp_error (err, "Disk '%s' is named twice", list->ptr[i]);
      return NULL;
    }
  return n;
}

/* The disks of a new checkpoint, checked: known, not twice, and with
 * no bitmap of the checkpoint's name yet.  A copy in *OUT.
 */
static int
checked_disks (const char *name, const string_vector *disks,
               string_vector *out, struct qmp_error *err)
{
  struct node *n;
  size_t i;

  for (n = nodes_list (); disks == NULL && n; n = n->next)
    if (string_vector_append (out, n->name) == -1)
      return out_of_memory (err);
  for (i = 0; disks && i < disks->len; i++)
    if (string_vector_append (out, disks->ptr[i]) == -1)
      return out_of_memory (err);
  if (out->len == 0) {
    qmp_error (err, "A checkpoint needs at least one disk");
    return -1;
  }
  for (i = 0; i < out->len; i++) {
    if ((n = listed_node (out, i, err)) == NULL)
      return -1;
    if (bitmaps_find (n, name)) {
      qmp_error (err, "Bitmap already exists: %s", name);
      return -1;
    }
  }
  return 0;
}

/* A new checkpoint over DISKS (borrowed names, copied here). */
static struct checkpoint *
checkpoint_new (const char *name, const char *description,
                const string_vector *disks)
{
  struct checkpoint *c = calloc (1, sizeof *c);
  size_t i;

  if (c == NULL)
    return NULL;
  c->name = strdup (name);
  c->description = description ? strdup (description) : NULL;
  if (c->name == NULL || (description && c->description == NULL) ||
      string_vector_reserve (&c->disks, disks->len) == -1) {
    checkpoint_free (c);
    return NULL;
  }
  for (i = 0; i < disks->len; i++) {
    char *s = strdup (disks->ptr[i]);
    if (s == NULL) {
      checkpoint_free (c);
      return NULL;
    }
    string_vector_append (&c->disks, s);
  }
  c->creation_time = time (NULL);
  c->serial = next_serial++;
  return c;
}

/* On NODE: stop the previous checkpoint's bitmap, start C's. */
static int
start_bitmap (struct txn *t, struct checkpoint *c, const char *node,
              struct qmp_error *err)
{
  struct node *n = nodes_find (node);
  struct checkpoint *prev = previous_on (c, node);
  struct dirty_bitmap *d;

  if (prev && (d = bitmaps_find (n, prev->name)) != NULL &&
      bitmaps_set_recording (t, n, d, false, err) == -1)
    return -1;
  if (bitmaps_add (t, n, c->name, DEFAULT_GRANULARITY,
                   bitmaps_persistence (), false, err) == -1)
    return -1;
  bitmaps_find (n, c->name)->checkpoint = true;         /* undone with it */
  return 0;
}

struct checkpoint *
checkpoints_create (struct txn *t, const char *name, const char *description,
                    const string_vector *disks, struct qmp_error *err)
{
  string_vector list = empty_vector;
  struct checkpoint *c;
  struct list_undo *u;
  size_t i, nr = 0;

  for (c = checkpoints; c; c = c->next)
    nr++;
  if (nr >= limits.checkpoints) {
    qmp_error (err, "Cannot create checkpoint '%s': there are %zu "
               "checkpoints, the limit (max-checkpoints=%u); delete old "
               "ones first", name, nr, limits.checkpoints);
    return NULL;
  }
  if (!check_new_name (name, err) ||
      checked_disks (name, disks, &list, err) == -1) {
    string_vector_reset (&list);        /* borrowed names */
    return NULL;
  }
  c = checkpoint_new (name, description, &list);
  string_vector_reset (&list);
  if (c == NULL || (u = save_list ()) == NULL) {
    checkpoint_free (c);
    out_of_memory (err);
    return NULL;
  }
  u->added = c;
  c->parent = current;
  append (c);
  current = c;
  if (txn_add (t, &list_ops, u) == -1) {
    out_of_memory (err);
    return NULL;
  }
  for (i = 0; i < c->disks.len; i++)
    if (start_bitmap (t, c, c->disks.ptr[i], err) == -1)
      return NULL;
  return c;
}

/* REDEFINE: the disks, each with a bitmap NAME that may become a
 * checkpoint's again.  A copy (borrowed names) in *OUT.
 */
static int
redefine_disks (const char *name, const string_vector *disks,
                string_vector *out, struct qmp_error *err)
{
  struct dirty_bitmap *d;
  struct node *n;
  size_t i;

  for (n = nodes_list (); disks == NULL && n; n = n->next)
    if (bitmaps_find (n, name) && string_vector_append (out, n->name) == -1)
      return out_of_memory (err);
  for (i = 0; disks && i < disks->len; i++)
    if (string_vector_append (out, disks->ptr[i]) == -1)
      return out_of_memory (err);
  if (out->len == 0) {
    if (disks == NULL)
      qmp_error (err, "Cannot redefine checkpoint '%s': no disk has a "
                 "bitmap of that name", name);
    else
      qmp_error (err, "A checkpoint needs at least one disk");
    return -1;
  }
  for (i = 0; i < out->len; i++) {
    if ((n = listed_node (out, i, err)) == NULL)
      return -1;
    d = bitmaps_find (n, name);
    if (d == NULL) {
      qmp_error (err, "Cannot redefine checkpoint '%s': disk '%s' has no "
                 "bitmap '%s'", name, n->name, name);
      return -1;
    }
    if (d->checkpoint) {
      qmp_error (err, "Cannot redefine checkpoint '%s': bitmap '%s' on '%s' "
                 "already belongs to a checkpoint", name, name, n->name);
      return -1;
    }
    if (dirty_bitmap_busy (d)) {
      qmp_error (err, "Bitmap '%s' is currently in use by another operation "
                 "and cannot be used", name);
      return -1;
    }
    if (d->inconsistent) {
      qmp_error (err, "Bitmap '%s' on '%s' is inconsistent and cannot be "
                 "used", name, n->name);
      return -1;
    }
    if (bitmaps_persistence () && !d->persistent) {
      qmp_error (err, "Cannot redefine checkpoint '%s': bitmap '%s' on '%s' "
                 "is not persistent", name, name, n->name);
      return -1;
    }
  }
  return 0;
}

/* Does a checkpoint from C on (C included) cover NODE? */
static bool
covered_from (const struct checkpoint *c, const char *node)
{
  for (; c; c = c->next)
    if (checkpoint_covers (c, node))
      return true;
  return false;
}

/* REDEFINE on each disk: only the newest checkpoint's bitmap may
 * record, and it must (or the changes since it are lost).  NEXT: the
 * first checkpoint after the new one.
 */
static int
redefine_check_chain (const char *name, const string_vector *disks,
                      const struct checkpoint *next, struct qmp_error *err)
{
  size_t i;

  for (i = 0; i < disks->len; i++) {
    struct dirty_bitmap *d = bitmaps_find (nodes_find (disks->ptr[i]), name);
    bool newest = !covered_from (next, disks->ptr[i]);

    if (newest && !d->recording) {
      qmp_error (err, "Cannot redefine checkpoint '%s': it would be the "
                 "newest on '%s', but bitmap '%s' there is disabled",
                 name, disks->ptr[i], name);
      return -1;
    }
    if (!newest && d->recording) {
      qmp_error (err, "Cannot redefine checkpoint '%s': bitmap '%s' on '%s' "
                 "records, but a newer checkpoint covers that disk",
                 name, name, disks->ptr[i]);
      return -1;
    }
  }
  return 0;
}

/* REDEFINE: where the new checkpoint goes, and its creation time. */
static int
redefine_place (const char *name, const char *parent_name, int64_t *ctime,
                struct checkpoint **parent, struct checkpoint **next,
                struct qmp_error *err)
{
  *parent = NULL;
  if (parent_name && (*parent = checkpoints_find (parent_name)) == NULL) {
    qmp_error (err, "Checkpoint '%s' not found", parent_name);
    return -1;
  }
  *next = *parent ? (*parent)->next : checkpoints;
  if (*ctime < 0)
    *ctime = time (NULL);
  if (*parent && *ctime < (*parent)->creation_time) {
    qmp_error (err, "Cannot redefine checkpoint '%s': its creation-time is "
               "before its parent's ('%s')", name, (*parent)->name);
    return -1;
  }
  if (*next && *ctime > (*next)->creation_time) {
    qmp_error (err, "Cannot redefine checkpoint '%s': its creation-time is "
               "after that of '%s', which would follow it", name,
               (*next)->name);
    return -1;
  }
  return 0;
}

struct checkpoint *
checkpoints_redefine (struct txn *t, const char *name,
                      const char *description, const string_vector *disks,
                      const char *parent_name, int64_t ctime,
                      struct qmp_error *err)
{
  string_vector list = empty_vector;
  struct checkpoint *c, *parent, *next, *p, **pp;
  struct list_undo *u;
  size_t i;

  if (!check_new_name (name, err) ||
      redefine_place (name, parent_name, &ctime, &parent, &next, err) == -1 ||
      redefine_disks (name, disks, &list, err) == -1 ||
      redefine_check_chain (name, &list, next, err) == -1) {
    string_vector_reset (&list);        /* borrowed names */
    return NULL;
  }
  c = checkpoint_new (name, description, &list);
  string_vector_reset (&list);
  if (c == NULL || (u = save_list ()) == NULL) {
    checkpoint_free (c);
    out_of_memory (err);
    return NULL;
  }
  if (txn_add (t, &list_ops, u) == -1) {
    clean_list (u);
    checkpoint_free (c);
    out_of_memory (err);
    return NULL;
  }
  u->added = c;
  c->creation_time = ctime;
  c->parent = parent;
  for (p = checkpoints; p; p = p->next)
    if (p->parent == parent)
      p->parent = c;
  for (pp = &checkpoints; *pp != next; pp = &(*pp)->next)
    ;
  c->next = next;
  *pp = c;
  if (next == NULL)
    current = c;
  for (i = 0; i < c->disks.len; i++) {
    struct node *n = nodes_find (c->disks.ptr[i]);
    struct checkpoint *prev = previous_on (c, n->name);
    struct dirty_bitmap *pd;

    /* Only where C is the newest: its predecessor stops recording. */
    if (!covered_from (next, n->name) && prev &&
        (pd = bitmaps_find (n, prev->name)) != NULL &&
        bitmaps_set_recording (t, n, pd, false, err) == -1)
      return NULL;
    if (bitmaps_set_checkpoint (t, bitmaps_find (n, c->name), true,
                                err) == -1)
      return NULL;
  }
  return c;
}

/* On N: hand C's changes to the previous checkpoint's bitmap (which
 * records again if C's did), then drop C's bitmap or, for
 * metadata-only, leave it as a plain bitmap.
 */
static int
retire_bitmap (struct txn *t, struct checkpoint *c, struct node *n,
               bool metadata_only, struct qmp_error *err)
{
  struct dirty_bitmap *d = bitmaps_find (n, c->name), *pd;
  struct checkpoint *prev = previous_on (c, n->name);

  if (d == NULL)
    return 0;
  if (prev && (pd = bitmaps_find (n, prev->name)) != NULL) {
    /* What changed while C was newest is unknown if C's bitmap is:
     * then so is what changed since the previous checkpoint.
     */
    if (d->inconsistent) {
      if (bitmaps_set_inconsistent (t, n, pd, err) == -1)
        return -1;
    }
    else if (!pd->inconsistent && bitmaps_merge (t, n, pd, d->bm, err) == -1)
      return -1;
    if (d->recording && bitmaps_set_recording (t, n, pd, true, err) == -1)
      return -1;
  }
  if (metadata_only)
    return bitmaps_set_checkpoint (t, d, false, err);
  return bitmaps_remove (t, n, d, err);
}

static int
check_deletable (struct checkpoint *c, struct qmp_error *err)
{
  size_t i;

  for (i = 0; i < c->disks.len; i++) {
    struct node *n = nodes_find (c->disks.ptr[i]);
    struct dirty_bitmap *d = n ? bitmaps_find (n, c->name) : NULL;
    if (n == NULL) {
      qmp_error (err, "Cannot delete checkpoint '%s': disk '%s' is not "
                 "present", c->name, c->disks.ptr[i]);
      return -1;
    }
    if (d && d->users > 0) {
      qmp_error (err, "Checkpoint '%s' is in use by a backup", c->name);
      return -1;
    }
  }
  return 0;
}

int
checkpoints_delete (struct txn *t, struct checkpoint *c, bool metadata_only,
                    struct qmp_error *err)
{
  struct checkpoint *p, **pp;
  struct list_undo *u;
  size_t i;

  if (check_deletable (c, err) == -1)
    return -1;
  for (i = 0; i < c->disks.len; i++)
    if (retire_bitmap (t, c, nodes_find (c->disks.ptr[i]), metadata_only,
                       err) == -1)
      return -1;
  if ((u = save_list ()) == NULL)
    return out_of_memory (err);
  u->removed = c;
  for (p = checkpoints; p; p = p->next)
    if (p->parent == c)
      p->parent = c->parent;
  if (current == c)
    current = c->parent;
  for (pp = &checkpoints; *pp != c; pp = &(*pp)->next)
    ;
  *pp = c->next;
  return txn_add (t, &list_ops, u) == -1 ? out_of_memory (err) : 0;
}

struct pending_undo {
  struct checkpoint *c;
  bool was;
};

static void
undo_pending (void *p)
{
  struct pending_undo *u = p;

  u->c->pending = u->was;
}

static const struct txn_step_ops pending_ops = {
  .undo = undo_pending, .clean = free,
};

int
checkpoints_set_pending (struct txn *t, struct checkpoint *c, bool pending,
                         struct qmp_error *err)
{
  struct pending_undo *u;

  if (c->pending == pending)
    return 0;
  if ((u = malloc (sizeof *u)) == NULL)
    return out_of_memory (err);
  u->c = c;
  u->was = c->pending;
  c->pending = pending;
  return txn_add (t, &pending_ops, u) == -1 ? out_of_memory (err) : 0;
}

int
checkpoints_restore (const char *name, const char *parent,
                     const char *description, int64_t ctime,
                     string_vector *disks)
{
  struct checkpoint *c;

  if (checkpoints_find (name) != NULL) {
    string_vector_free_all (disks);
    errno = EEXIST;
    return -1;
  }
  c = calloc (1, sizeof *c);
  if (c == NULL) {
    string_vector_free_all (disks);
    return -1;
  }
  c->name = strdup (name);
  c->description = description ? strdup (description) : NULL;
  c->creation_time = ctime;
  c->serial = next_serial++;
  c->disks = *disks;
  *disks = (string_vector) empty_vector;
  c->parent = parent ? checkpoints_find (parent) : NULL;
  if (c->name == NULL || (description && c->description == NULL)) {
    checkpoint_free (c);
    return -1;
  }
  append (c);
  return 0;
}
