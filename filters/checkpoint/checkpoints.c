#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "bitmap.h"
#include "bitmaps.h"
#include "checkpoints.h"
#include "persist.h"

static struct checkpoint *checkpoints;  /* oldest first */
static struct checkpoint *current;

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

  for (i = 0; i < c->nr_disks; i++)
    if (strcmp (c->disks[i], node) == 0)
      return true;
  return false;
}

static void
checkpoint_free (struct checkpoint *c)
{
  size_t i;

  if (c == NULL)
    return;
  for (i = 0; i < c->nr_disks; i++)
    free (c->disks[i]);
  free (c->disks);
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

struct bitmap *
checkpoints_changed_since (const struct checkpoint *c, struct node *n,
                           struct qmp_error *err)
{
  const struct checkpoint *p;
  struct dirty_bitmap *d = bitmaps_find (n, c->name);
  struct bitmap *bm;

  if (d == NULL || d->inconsistent) {
    qmp_error (err, "Bitmap '%s' of checkpoint '%s' on '%s' is %s",
               c->name, c->name, n->name,
               d ? "inconsistent and cannot be used" : "missing");
    return NULL;
  }
  bm = bitmap_new (n->size, bitmap_granularity (d->bm));
  if (bm == NULL)
    goto nomem;
  for (p = c; p; p = p->next) {
    if (!checkpoint_covers (p, n->name))
      continue;
    d = bitmaps_find (n, p->name);
    if (d == NULL || d->inconsistent) {
      qmp_error (err, "Bitmap '%s' on '%s' is inconsistent and cannot be "
                 "used", p->name, n->name);
      bitmap_free (bm);
      return NULL;
    }
    if (bitmap_merge (bm, d->bm) == -1)
      goto nomem;
  }
  return bm;
 nomem:
  bitmap_free (bm);
  qmp_error (err, "out of memory");
  return NULL;
}

/* Undo of any change to the list: the list, every parent and the
 * current checkpoint as they were, plus checkpoints to free.
 */
struct list_undo {
  struct checkpoint **order;    /* the old list, in order */
  struct checkpoint **parents;  /* each one's old parent */
  size_t nr;
  struct checkpoint *current;
  struct checkpoint *added;     /* freed if undone */
  struct checkpoint *removed;   /* freed if not undone */
  bool undone;
};

static void
undo_list (void *p)
{
  struct list_undo *u = p;
  size_t i;

  checkpoints = NULL;
  for (i = u->nr; i-- > 0; ) {
    u->order[i]->next = checkpoints;
    u->order[i]->parent = u->parents[i];
    checkpoints = u->order[i];
  }
  current = u->current;
  u->undone = true;
}

static void
done_list (void *p)
{
  struct list_undo *u = p;

  if (u->undone)
    checkpoint_free (u->added);
  else
    checkpoint_free (u->removed);
  free (u->order);
  free (u->parents);
  free (u);
}

/* Save the list before changing it. */
static struct list_undo *
save_list (void)
{
  struct list_undo *u = calloc (1, sizeof *u);
  struct checkpoint *c;
  size_t n = 0;

  for (c = checkpoints; c; c = c->next)
    n++;
  if (u == NULL ||
      (u->order = malloc ((n + 1) * sizeof *u->order)) == NULL ||
      (u->parents = malloc ((n + 1) * sizeof *u->parents)) == NULL) {
    if (u)
      free (u->order);
    free (u);
    return NULL;
  }
  for (c = checkpoints; c; c = c->next) {
    u->order[u->nr] = c;
    u->parents[u->nr++] = c->parent;
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

static void
add_node_name (struct node *n, void *list)
{
  json_array_append_new (list, json_string (n->name));
}

/* The disks of a new checkpoint, checked: known, not twice, and with
 * no bitmap of the checkpoint's name yet.
 */
static json_t *
checked_disks (const char *name, json_t *disks, struct qmp_error *err)
{
  json_t *list = json_array (), *v, *w;
  size_t i, j;

  if (disks)
    json_array_foreach (disks, i, v) {
      if (!json_is_string (v)) {
        qmp_error (err, "Invalid parameter type for 'disks', expected: "
                   "string");
        goto fail;
      }
      json_array_append (list, v);
    }
  else
    nodes_foreach (add_node_name, list);
  if (json_array_size (list) == 0) {
    qmp_error (err, "A checkpoint needs at least one disk");
    goto fail;
  }
  json_array_foreach (list, i, v) {
    struct node *n = bitmaps_node (json_string_value (v), err);
    if (n == NULL)
      goto fail;
    for (j = 0; j < i; j++) {
      w = json_array_get (list, j);
      if (strcmp (json_string_value (w), json_string_value (v)) == 0) {
        qmp_error (err, "Disk '%s' is named twice", json_string_value (v));
        goto fail;
      }
    }
    if (bitmaps_find (n, name)) {
      qmp_error (err, "Bitmap already exists: %s", name);
      goto fail;
    }
  }
  return list;
 fail:
  json_decref (list);
  return NULL;
}

static struct checkpoint *
checkpoint_new (const char *name, const char *description, json_t *disks)
{
  struct checkpoint *c = calloc (1, sizeof *c);
  json_t *v;
  size_t i;

  if (c == NULL)
    return NULL;
  c->name = strdup (name);
  c->description = description ? strdup (description) : NULL;
  c->disks = calloc (json_array_size (disks), sizeof *c->disks);
  if (c->name == NULL || c->disks == NULL ||
      (description && c->description == NULL)) {
    checkpoint_free (c);
    return NULL;
  }
  json_array_foreach (disks, i, v) {
    c->disks[i] = strdup (json_string_value (v));
    if (c->disks[i] == NULL) {
      checkpoint_free (c);
      return NULL;
    }
    c->nr_disks++;
  }
  c->creation_time = time (NULL);
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
      bitmaps_set_recording (t, n, d, false) == -1)
    goto nomem;
  if (bitmaps_add (t, n, c->name, DEFAULT_GRANULARITY, persist_enabled (),
                   false, err) == -1)
    return -1;
  bitmaps_find (n, c->name)->checkpoint = true;
  return 0;
 nomem:
  qmp_error (err, "out of memory");
  return -1;
}

struct checkpoint *
checkpoints_create (struct txn *t, const char *name, const char *description,
                    json_t *disks, struct qmp_error *err)
{
  struct checkpoint *c, **pp;
  struct list_undo *u;
  json_t *list;
  size_t i;

  if (!check_new_name (name, err) ||
      (list = checked_disks (name, disks, err)) == NULL)
    return NULL;
  c = checkpoint_new (name, description, list);
  json_decref (list);
  if (c == NULL || (u = save_list ()) == NULL) {
    checkpoint_free (c);
    qmp_error (err, "out of memory");
    return NULL;
  }
  u->added = c;
  c->parent = current;
  for (pp = &checkpoints; *pp; pp = &(*pp)->next)
    ;
  *pp = c;
  current = c;
  if (txn_push (t, undo_list, done_list, u) == -1) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  for (i = 0; i < c->nr_disks; i++)
    if (start_bitmap (t, c, c->disks[i], err) == -1)
      return NULL;
  return c;
}

/* On NODE: hand C's changes to the previous checkpoint's bitmap (which
 * records again if C's did), then drop C's bitmap or, for
 * metadata-only, leave it as a plain bitmap.
 */
static int
retire_bitmap (struct txn *t, struct checkpoint *c, struct node *n,
               bool metadata_only)
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
      if (bitmaps_set_inconsistent (t, n, pd) == -1)
        return -1;
    }
    else if (!pd->inconsistent && bitmaps_merge (t, n, pd, d->bm) == -1)
      return -1;
    if (d->recording && bitmaps_set_recording (t, n, pd, true) == -1)
      return -1;
  }
  if (metadata_only) {
    d->checkpoint = false;      /* plain now; undone with the list */
    return 0;
  }
  return bitmaps_remove (t, n, d);
}

struct flag_undo {
  struct dirty_bitmap *d;
};

static void
undo_flag (void *p)
{
  ((struct flag_undo *) p)->d->checkpoint = true;
}

int
checkpoints_delete (struct txn *t, struct checkpoint *c, bool metadata_only,
                    struct qmp_error *err)
{
  struct checkpoint *p, **pp;
  struct list_undo *u;
  size_t i;

  for (i = 0; i < c->nr_disks; i++) {
    struct node *n = nodes_find (c->disks[i]);
    struct dirty_bitmap *d = n ? bitmaps_find (n, c->name) : NULL;
    if (n == NULL) {
      qmp_error (err, "Cannot delete checkpoint '%s': disk '%s' is not "
                 "present", c->name, c->disks[i]);
      return -1;
    }
    if (d && d->users > 0) {
      qmp_error (err, "Checkpoint '%s' is in use by a backup", c->name);
      return -1;
    }
  }
  for (i = 0; i < c->nr_disks; i++) {
    struct node *n = nodes_find (c->disks[i]);
    struct dirty_bitmap *d = bitmaps_find (n, c->name);
    struct flag_undo *f;
    if (metadata_only && d) {
      if ((f = malloc (sizeof *f)) == NULL)
        goto nomem;
      f->d = d;
      if (txn_push (t, undo_flag, free, f) == -1)
        goto nomem;
    }
    if (retire_bitmap (t, c, n, metadata_only) == -1)
      goto nomem;
  }
  if ((u = save_list ()) == NULL)
    goto nomem;
  u->removed = c;
  for (p = checkpoints; p; p = p->next)
    if (p->parent == c)
      p->parent = c->parent;
  if (current == c)
    current = c->parent;
  for (pp = &checkpoints; *pp != c; pp = &(*pp)->next)
    ;
  *pp = c->next;
  if (txn_push (t, undo_list, done_list, u) == -1)
    goto nomem;
  return 0;
 nomem:
  qmp_error (err, "out of memory");
  return -1;
}

void
checkpoints_set_current (struct checkpoint *c)
{
  current = c;
}

int
checkpoints_restore (const char *name, const char *parent,
                     const char *description, int64_t ctime,
                     char **disks, size_t nr_disks)
{
  struct checkpoint *c = calloc (1, sizeof *c), **pp;

  if (c == NULL)
    return -1;
  c->name = strdup (name);
  c->description = description ? strdup (description) : NULL;
  c->creation_time = ctime;
  c->disks = disks;
  c->nr_disks = nr_disks;
  c->parent = parent ? checkpoints_find (parent) : NULL;
  for (pp = &checkpoints; *pp; pp = &(*pp)->next)
    ;
  *pp = c;
  return c->name ? 0 : -1;
}
