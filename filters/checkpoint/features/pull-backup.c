/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Pull backups: lifecycle and the export registry (see pull-backup.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "bitmap.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "core/limits.h"
#include "engines/snapshot-access.h"
#include "features/pull-backup.h"

struct backup_export {
  struct backup *backup;
  struct cbw *cbw;
  char *name;                   /* NODE@ID or as given */
};

struct backup {
  struct backup *next;
  char *id;
  char *label;                  /* "backup ID", in messages */
  char *incremental;            /* base checkpoint, or NULL */
  char *checkpoint;             /* checkpoint created with it, or NULL */
  uint64_t checkpoint_serial;   /* that very checkpoint (its name may be
                                 * reused after it is deleted) */
  struct backup_export *exports;        /* array */
  size_t nr_exports;
  /* Changed from any thread under the lock (lock order: backups_lock,
   * then this); ended and failed only ever turn true and are also read
   * with atomic loads, without the lock.
   */
  pthread_mutex_t lock;
  bool ended;                   /* backup-end ran: exports refuse I/O */
  bool failed;
  char *error;
  unsigned connections;         /* open exports (and backup_retire's
                                 * hold), under backups_lock */
};

/* The list changes with the monitor lock and the barrier held; the
 * data path (open, close, list) reads it under backups_lock.
 */
static pthread_mutex_t backups_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backup *backups;
static const char *scratch_dir;
static unsigned next_id = 1;
/* Connections open on every backup's exports, under backups_lock:
 * each holds nbdkit threads, so they are bounded together.
 */
static unsigned export_connections;

void
backups_set_scratch_dir (const char *dir)
{
  scratch_dir = dir;
}

struct backup *
backups_find (const char *id)
{
  struct backup *b;

  for (b = backups; b; b = b->next)
    if (strcmp (b->id, id) == 0)
      return b;
  return NULL;
}

const char *
backup_id (const struct backup *b)
{
  return b->id;
}

struct backup *
backups_first (void)
{
  return backups;
}

struct backup *
backup_next (const struct backup *b)
{
  return b->next;
}

bool
backups_use_node (const struct node *n)
{
  struct backup *b;
  size_t i;

  for (b = backups; b; b = b->next)
    for (i = 0; i < b->nr_exports; i++)
      if (cbw_node (b->exports[i].cbw) == n)
        return true;
  return false;
}

/* True when the backup no longer serves data.  Read without the lock:
 * this is on every guest write, and the flags only ever turn true.
 */
static bool
backup_dead (void *opaque)
{
  struct backup *b = opaque;

  return __atomic_load_n (&b->ended, __ATOMIC_SEQ_CST) ||
    __atomic_load_n (&b->failed, __ATOMIC_SEQ_CST);
}

static void
backup_fail (void *opaque, const char *what, int errnum)
{
  struct backup *b = opaque;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);

  if (!b->failed) {
    __atomic_store_n (&b->failed, true, __ATOMIC_SEQ_CST);
    if (asprintf (&b->error, "%s: %s", what, strerror (errnum)) == -1)
      b->error = NULL;
    nbdkit_error ("checkpoint: backup %s failed: %s: %s", b->id, what,
                  strerror (errnum));
  }
}

static void
backup_free (struct backup *b)
{
  size_t i;

  for (i = 0; i < b->nr_exports; i++) {
    cbw_free (b->exports[i].cbw);
    free (b->exports[i].name);
  }
  free (b->exports);
  free (b->id);
  free (b->label);
  free (b->incremental);
  free (b->checkpoint);
  free (b->error);
  pthread_mutex_destroy (&b->lock);
  free (b);
}

static bool
has_export (const struct backup *b, size_t nr, const char *name)
{
  size_t i;

  for (i = 0; i < nr; i++)
    if (b->exports[i].name && strcmp (b->exports[i].name, name) == 0)
      return true;
  return false;
}

/* Is NAME already an export: a node's, another backup's, or one of the
 * first NR of MAKING, the backup being made?
 */
static bool
export_taken (const struct backup *making, size_t nr, const char *name)
{
  struct backup *b;

  if (nodes_find (name) || has_export (making, nr, name))
    return true;
  for (b = backups; b; b = b->next)
    if (has_export (b, b->nr_exports, name))
      return true;
  return false;
}

static struct backup *
backup_new (const struct backup_spec *spec, size_t nr_exports,
            struct qmp_error *err)
{
  struct backup *b = calloc (1, sizeof *b);

  if (b == NULL ||
      (b->exports = calloc (nr_exports, sizeof *b->exports)) == NULL) {
    free (b);
    qmp_error (err, "out of memory");
    return NULL;
  }
  pthread_mutex_init (&b->lock, NULL);
  if (spec->id)
    b->id = strdup (spec->id);
  else
    while (asprintf (&b->id, "backup-%u", next_id++) != -1 &&
           backups_find (b->id)) {
      free (b->id);
      b->id = NULL;
    }
  if (b->id == NULL || asprintf (&b->label, "backup %s", b->id) == -1 ||
      (spec->incremental &&
       (b->incremental = strdup (spec->incremental)) == NULL)) {
    b->label = NULL;
    backup_free (b);
    qmp_error (err, "out of memory");
    return NULL;
  }
  return b;
}

/* The chunks of N changed since the base checkpoint (NULL: a full
 * backup, every chunk).  -1 with *ERR.
 */
static int
needed_on (struct backup *b, struct node *n, struct bitmap **needed,
           struct qmp_error *err)
{
  struct checkpoint *c;

  *needed = NULL;
  if (b->incremental == NULL)
    return 0;
  if ((c = checkpoints_find (b->incremental)) == NULL) {
    qmp_error (err, "Checkpoint '%s' not found", b->incremental);
    return -1;
  }
  if (!checkpoint_covers (c, n->name)) {
    qmp_error (err, "Checkpoint '%s' does not cover disk '%s'",
               c->name, n->name);
    return -1;
  }
  if (c->pending && backup_of_checkpoint (c) == NULL) {
    qmp_error (err, "Checkpoint '%s' is pending: the backup that created "
               "it never ended with success, so no backup holds that "
               "point in time; delete it (checkpoint-delete) and take a "
               "backup from an earlier checkpoint or a full one", c->name);
    return -1;
  }
  if ((*needed = checkpoints_changed_since (c, n, err)) == NULL)
    return -1;
  bitmap_compact (*needed);
  return 0;
}

/* Set up export I of B for node N: its name, its frozen view. */
static int
export_init (struct backup *b, size_t i, struct node *n, const char *name,
             enum cbw_on_error on_error, struct qmp_error *err)
{
  struct backup_export *e = &b->exports[i];
  const struct cbw_owner owner = {
    .name = b->label, .dead = backup_dead, .failed = backup_fail,
    .opaque = b,
  };
  struct bitmap *needed;

  e->backup = b;
  if (name)
    e->name = strdup (name);
  else if (asprintf (&e->name, "%s@%s", n->name, b->id) == -1)
    e->name = NULL;
  if (e->name == NULL) {
    qmp_error (err, "out of memory");
    return -1;
  }
  if (e->name[0] == '\0' || strlen (e->name) > 4096) {
    qmp_error (err, "Export name must be 1 to 4096 bytes");
    return -1;
  }
  if (export_taken (b, i, e->name)) {
    qmp_error (err, "Export '%s' already exists", e->name);
    return -1;
  }
  if (needed_on (b, n, &needed, err) == -1)
    return -1;
  e->cbw = cbw_new (n, needed, on_error, &owner, scratch_dir, err);
  return e->cbw ? 0 : -1;
}

/* An incremental backup holds its base checkpoint: its bitmaps are
 * busy (so it cannot be deleted) until the backup ends.
 */
static void
hold_base (struct backup *b, int delta)
{
  struct checkpoint *c = b->incremental ? checkpoints_find (b->incremental)
                                        : NULL;
  struct dirty_bitmap *d;
  size_t i;

  for (i = 0; c && i < b->nr_exports; i++)
    if ((d = bitmaps_find (cbw_node (b->exports[i].cbw), c->name)) != NULL)
      d->users += delta;
}

/* Barrier held exclusive: the freeze, or its undo. */
static int
backup_link (struct backup *b, struct qmp_error *err)
{
  size_t i;

  for (i = 0; i < b->nr_exports; i++)
    if (cbw_attach (b->exports[i].cbw, err) == -1) {
      while (i-- > 0)
        cbw_detach (b->exports[i].cbw);
      return -1;
    }
  hold_base (b, 1);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  b->next = backups;
  backups = b;
  return 0;
}

static void
backup_unlink (struct backup *b)
{
  struct backup **bp;
  size_t i;

  for (i = 0; i < b->nr_exports; i++)
    cbw_detach (b->exports[i].cbw);
  hold_base (b, -1);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  for (bp = &backups; *bp; bp = &(*bp)->next)
    if (*bp == b) {
      *bp = b->next;
      break;
    }
}

/* Drop one hold on B (a connection, or backup_retire's own); the last
 * one of an ended backup frees it.  backups_lock held by the caller
 * for the count; the free happens after it is released.
 */
static bool
backup_unhold_locked (struct backup *b)
{
  return --b->connections == 0 && b->ended;
}

/* Mark B ended and give its scratch back; free it now or when its
 * last export closes.  ENDED is written under both locks, so
 * backup_export_close may read it under backups_lock alone.  Retiring
 * holds B like a connection while the scratch goes, so that a last
 * connection closing meanwhile cannot free it under the discard.
 */
static void
backup_retire (struct backup *b)
{
  bool free_now;
  size_t i;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);
    __atomic_store_n (&b->ended, true, __ATOMIC_SEQ_CST);
    b->connections++;
  }
  for (i = 0; i < b->nr_exports; i++)
    cbw_discard (b->exports[i].cbw);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
    free_now = backup_unhold_locked (b);
  }
  if (free_now)
    backup_free (b);
}

/* Undo of backup-begin: the backup never existed. */
static void
undo_begin (void *p)
{
  struct backup *b = p;

  backup_unlink (b);
  backup_retire (b);
}

static const struct txn_step_ops begin_ops = { .undo = undo_begin };

static int
init_exports (struct backup *b, const struct backup_spec *spec,
              struct qmp_error *err)
{
  struct node *n = nodes_list ();
  size_t i;

  for (i = 0; spec->disks ? i < spec->nr_disks : n != NULL; i++) {
    const char *name = spec->disks ? spec->disks[i].export : NULL;
    if (spec->disks)
      n = nodes_find (spec->disks[i].node);
    b->nr_exports++;
    if (export_init (b, i, n, name, spec->on_cbw_error, err) == -1)
      return -1;
    n = n->next;
  }
  return 0;
}

/* The checkpoint created with the backup covers the backup's disks. */
static int
create_checkpoint (struct txn *t, struct backup *b,
                   const struct backup_spec *spec, struct qmp_error *err)
{
  string_vector disks = empty_vector;
  struct checkpoint *c;
  size_t i;
  int r = -1;

  if (string_vector_reserve (&disks, b->nr_exports) == -1) {
    qmp_error (err, "out of memory");
    return -1;
  }
  for (i = 0; i < b->nr_exports; i++)
    string_vector_append (&disks, cbw_node (b->exports[i].cbw)->name);
  c = checkpoints_create (t, spec->checkpoint, spec->checkpoint_description,
                          &disks, err);
  if (c && checkpoints_set_pending (t, c, true, err) == 0) {
    b->checkpoint_serial = c->serial;
    if ((b->checkpoint = strdup (spec->checkpoint)) != NULL)
      r = 0;
    else
      qmp_error (err, "out of memory");
  }
  string_vector_reset (&disks);         /* borrowed names */
  return r;
}

static size_t
count_nodes (void)
{
  struct node *n;
  size_t nr = 0;

  for (n = nodes_list (); n; n = n->next)
    nr++;
  return nr;
}

static unsigned
count_backups (void)
{
  struct backup *b;
  unsigned nr = 0;

  for (b = backups; b; b = b->next)
    nr++;
  return nr;
}

struct backup *
backup_begin (struct txn *t, const struct backup_spec *spec,
              struct qmp_error *err)
{
  size_t nr = spec->disks ? spec->nr_disks : count_nodes ();
  struct backup *b;

  if (spec->id && backups_find (spec->id)) {
    qmp_error (err, "Backup '%s' already exists", spec->id);
    return NULL;
  }
  if (count_backups () >= limits.backups) {
    qmp_error (err, "Cannot begin a backup: %u backups are active, the "
               "limit (max-backups=%u); end one first", count_backups (),
               limits.backups);
    return NULL;
  }
  if (block_copy_fd_budget (nr, 0, "begin a backup", err) == -1)
    return NULL;
  b = backup_new (spec, nr, err);
  if (b == NULL)
    return NULL;
  if (init_exports (b, spec, err) == -1) {
    backup_free (b);
    return NULL;
  }
  /* The freeze: the barrier is up, so no write is in flight. */
  if (backup_link (b, err) == -1) {
    backup_free (b);
    return NULL;
  }
  if (txn_add (t, &begin_ops, b) == -1) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  if (spec->checkpoint && create_checkpoint (t, b, spec, err) == -1)
    return NULL;
  return b;
}

void
backup_end (struct backup *b)
{
  backup_unlink (b);
  backup_retire (b);
}

struct backup *
backup_of_checkpoint (const struct checkpoint *c)
{
  struct backup *b;

  for (b = backups_first (); b; b = backup_next (b))
    if (backup_own_checkpoint (b) == c)
      return b;
  return NULL;
}

struct checkpoint *
backup_own_checkpoint (const struct backup *b)
{
  struct checkpoint *c = b->checkpoint ? checkpoints_find (b->checkpoint)
                                       : NULL;

  /* Only its own: one deleted since is gone, whatever has its name now. */
  return c && c->serial == b->checkpoint_serial ? c : NULL;
}

void
backups_end_all (void)
{
  struct backup *b;

  while ((b = backups) != NULL) {
    backup_unlink (b);
    backup_retire (b);
  }
}

json_t *
backup_describe_exports (const struct backup *b)
{
  json_t *list = json_array ();
  size_t i;

  for (i = 0; i < b->nr_exports; i++)
    json_array_append_new (list, json_pack (
      "{s:s,s:s,s:I}", "node", cbw_node (b->exports[i].cbw)->name,
      "export", b->exports[i].name,
      "size", (json_int_t) cbw_size (b->exports[i].cbw)));
  return list;
}

json_t *
backup_describe (struct backup *b)
{
  json_t *info = json_pack ("{s:s,s:o}", "id", b->id,
                            "exports", backup_describe_exports (b));
  uint64_t copied = 0;
  size_t i;

  for (i = 0; i < b->nr_exports; i++)
    copied += cbw_copied_bytes (b->exports[i].cbw);
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);
    json_object_set_new (info, "status",
                         json_string (b->failed ? "failed" : "active"));
    if (b->error)
      json_object_set_new (info, "error", json_string (b->error));
  }
  json_object_set_new (info, "copied-bytes", json_integer (copied));
  if (b->incremental)
    json_object_set_new (info, "incremental", json_string (b->incremental));
  if (b->checkpoint)
    json_object_set_new (info, "checkpoint", json_string (b->checkpoint));
  return info;
}

struct backup_export *
backup_export_open (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  struct backup *b;
  size_t i;

  for (b = backups; b; b = b->next)
    for (i = 0; i < b->nr_exports; i++)
      if (strcmp (b->exports[i].name, name) == 0) {
        if (__atomic_load_n (&b->failed, __ATOMIC_SEQ_CST)) {
          nbdkit_error ("checkpoint: backup %s has failed "
                        "(see query-backups)", b->id);
          return NULL;
        }
        if (export_connections >= limits.backup_connections) {
          nbdkit_error ("checkpoint: backup export '%s' refused: %u "
                        "connections to backup exports are open, the limit "
                        "(max-backup-connections=%u)", name,
                        export_connections, limits.backup_connections);
          return NULL;
        }
        export_connections++;
        b->connections++;
        return &b->exports[i];
      }
  return NULL;
}

void
backup_export_close (struct backup_export *e)
{
  struct backup *b = e->backup;
  bool free_now;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
    export_connections--;
    free_now = backup_unhold_locked (b);
  }
  if (free_now)
    backup_free (b);
}

void
backup_exports_list (struct nbdkit_exports *exports)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  struct backup *b;
  size_t i;

  for (b = backups; b; b = b->next)
    if (!__atomic_load_n (&b->failed, __ATOMIC_SEQ_CST))
      for (i = 0; i < b->nr_exports; i++)
        nbdkit_add_export (exports, b->exports[i].name, "backup export");
}

const char *
backup_export_node (const struct backup_export *e)
{
  return cbw_node (e->cbw)->name;
}

uint64_t
backup_export_size (const struct backup_export *e)
{
  return cbw_size (e->cbw);
}

static int
dead_error (struct backup *b, int *err)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);
  nbdkit_error ("checkpoint: backup %s has %s%s%s", b->id,
                b->ended ? "ended" : "failed",
                b->error ? ": " : "", b->error ? b->error : "");
  *err = EIO;
  return -1;
}

int
backup_export_pread (struct backup_export *e, nbdkit_next *next, void *buf,
                     uint32_t count, uint64_t offset, int *err)
{
  if (backup_dead (e->backup))
    return dead_error (e->backup, err);
  if (snapshot_pread (e->cbw, next, buf, count, offset, err) == -1)
    return -1;
  /* After the read: a failure that raced with it shows here (it is
   * recorded before the write that caused it lands).
   */
  if (backup_dead (e->backup))
    return dead_error (e->backup, err);
  return 0;
}

int
backup_export_extents (struct backup_export *e, nbdkit_next *next,
                       uint32_t count, uint64_t offset, uint32_t flags,
                       struct nbdkit_extents *extents, int *err)
{
  if (backup_dead (e->backup))
    return dead_error (e->backup, err);
  return snapshot_extents (e->cbw, next, count, offset, flags, extents, err);
}
