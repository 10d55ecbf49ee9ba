/* The lifecycle of backups: begin (inside a txn), end, and the export
 * registry that NBD connections look names up in.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "bitmap.h"
#include "bitmaps.h"
#include "checkpoints.h"
#include "backup.h"
#include "backup-internal.h"

/* The list changes with the monitor lock and the barrier held; the
 * data path (open, close, list_exports) reads it under backups_lock.
 */
static pthread_mutex_t backups_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backup *backups;
static const char *scratch_dir;

void
backup_set_scratch_dir (const char *dir)
{
  scratch_dir = dir;
}

struct backup *
backups_list (void)
{
  return backups;
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

/* An unnamed, sparse scratch file that vanishes with its descriptor. */
static int
open_scratch (void)
{
  const char *dir = scratch_dir;
  CLEANUP_FREE char *path = NULL;
  int fd;

  if (dir == NULL)
    dir = getenv ("TMPDIR") ? getenv ("TMPDIR") : "/var/tmp";
  fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
    return fd;
  if (asprintf (&path, "%s/scratch.XXXXXX", dir) == -1)
    return -1;
  fd = mkostemp (path, O_CLOEXEC);
  if (fd >= 0)
    unlink (path);
  return fd;
}

static void
backup_disk_free (struct backup_disk *bd)
{
  size_t i;

  for (i = 0; i < SCRATCH_FILES; i++)
    if (bd->scratch_fds[i] >= 0)
      close (bd->scratch_fds[i]);
  bitmap_free (bd->needed);
  bitmap_free (bd->saved);
  bitmap_free (bd->changed);
  free (bd->export);
  for (i = 0; i < BACKUP_STRIPES; i++)
    pthread_rwlock_destroy (&bd->stripes[i]);
}

/* An incremental backup holds its base checkpoint: its bitmaps are
 * busy (so it cannot be deleted) until the backup ends.
 */
void
backup_hold_base (struct backup *b, int delta)
{
  struct checkpoint *c = b->incremental ? checkpoints_find (b->incremental)
                                        : NULL;
  struct dirty_bitmap *d;
  size_t i;

  for (i = 0; c && i < b->nr_disks; i++)
    if ((d = bitmaps_find (b->disks[i].node, c->name)) != NULL)
      d->users += delta;
}

void
backup_free (struct backup *b)
{
  size_t i;

  for (i = 0; i < b->nr_disks; i++)
    backup_disk_free (&b->disks[i]);
  free (b->disks);
  free (b->id);
  free (b->incremental);
  free (b->checkpoint);
  free (b->error);
  pthread_mutex_destroy (&b->lock);
  free (b);
}

/* Set up the disk of B for node N: scratch, maps, stripes. */
int
backup_disk_init (struct backup *b, struct backup_disk *bd, struct node *n,
                  const char *export, struct qmp_error *err)
{
  size_t i;

  bd->backup = b;
  bd->node = n;
  bd->size = n->size;
  for (i = 0; i < SCRATCH_FILES; i++)
    bd->scratch_fds[i] = -1;
  for (i = 0; i < BACKUP_STRIPES; i++)
    pthread_rwlock_init (&bd->stripes[i], NULL);
  if (export)
    bd->export = strdup (export);
  else if (asprintf (&bd->export, "%s@%s", n->name, b->id) == -1)
    bd->export = NULL;
  bd->saved = bitmap_new (n->size, BACKUP_BLOCK);
  bd->changed = bitmap_new (n->size, BACKUP_BLOCK);
  if (bd->export == NULL || bd->saved == NULL || bd->changed == NULL) {
    qmp_error (err, "out of memory");
    return -1;
  }
  for (i = 0; i < SCRATCH_FILES; i++)
    if ((bd->scratch_fds[i] = open_scratch ()) == -1)
      break;
  if (i < SCRATCH_FILES) {
    qmp_error (err, "Cannot create a scratch file in %s: %s",
               scratch_dir ? scratch_dir : "$TMPDIR", strerror (errno));
    return -1;
  }
  return 0;
}

/* Is NAME already an export (a node or a backup's)? */
bool
backup_export_taken (const char *name)
{
  struct backup *b;
  size_t i;

  if (nodes_find (name))
    return true;
  for (b = backups; b; b = b->next)
    for (i = 0; i < b->nr_disks; i++)
      if (b->disks[i].export && strcmp (b->disks[i].export, name) == 0)
        return true;
  return false;
}

/* Barrier held exclusive (inside a txn). */
void
backup_link (struct backup *b)
{
  size_t i;

  for (i = 0; i < b->nr_disks; i++) {
    b->disks[i].next_on_node = b->disks[i].node->backups;
    b->disks[i].node->backups = &b->disks[i];
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  b->next = backups;
  backups = b;
}

/* Barrier held exclusive.  B stays allocated while exports use it. */
void
backup_unlink (struct backup *b)
{
  struct backup **bp;
  struct backup_disk **pp;
  size_t i;

  for (i = 0; i < b->nr_disks; i++)
    for (pp = &b->disks[i].node->backups; *pp; pp = &(*pp)->next_on_node)
      if (*pp == &b->disks[i]) {
        *pp = b->disks[i].next_on_node;
        break;
      }
  backup_hold_base (b, -1);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  for (bp = &backups; *bp; bp = &(*bp)->next)
    if (*bp == b) {
      *bp = b->next;
      break;
    }
}

/* Mark B ended; free it now or when its last export closes.  ENDED
 * is written under both locks, so backup_close may read it under
 * backups_lock alone.
 */
void
backup_retire (struct backup *b)
{
  bool free_now;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&b->lock);
    __atomic_store_n (&b->ended, true, __ATOMIC_SEQ_CST);
    free_now = b->connections == 0;
  }
  if (free_now)
    backup_free (b);
}

struct backup_disk *
backup_open (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  struct backup *b;
  size_t i;

  for (b = backups; b; b = b->next)
    for (i = 0; i < b->nr_disks; i++)
      if (strcmp (b->disks[i].export, name) == 0) {
        if (__atomic_load_n (&b->failed, __ATOMIC_SEQ_CST)) {
          nbdkit_error ("checkpoint: backup %s has failed "
                        "(see query-backups)", b->id);
          return NULL;
        }
        b->connections++;
        return &b->disks[i];
      }
  return NULL;
}

void
backup_close (struct backup_disk *bd)
{
  struct backup *b = bd->backup;
  bool free_now;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
    free_now = --b->connections == 0 && b->ended;
  }
  if (free_now)
    backup_free (b);
}

void
backup_list_exports (struct nbdkit_exports *exports)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&backups_lock);
  struct backup *b;
  size_t i;

  for (b = backups; b; b = b->next)
    if (!__atomic_load_n (&b->failed, __ATOMIC_SEQ_CST))
      for (i = 0; i < b->nr_disks; i++)
        nbdkit_add_export (exports, b->disks[i].export, "backup export");
}
