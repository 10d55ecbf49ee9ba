/* Pull backups: frozen, read-only exports of the disks as they were at
 * the instant backup-begin ran, kept frozen by copy-before-write.
 *
 * A backup has one backup_disk per disk it covers.  While the backup
 * is active, a guest write to a chunk that the backup still needs and
 * has not saved first copies the old contents of the blocks it is
 * about to overwrite into the backup's scratch file.  Reads of the
 * backup export take saved blocks from the scratch file and the others
 * from the disk.
 *
 * What "needed" means: every block for a full backup; for an
 * incremental one, only the chunks changed since the base checkpoint
 * (the others are never read through its exports, which report them
 * as holes).  Blocks outside that are not saved; a read of one
 * succeeds while the disk still holds the frozen data there and fails
 * once a write has changed it: never wrong data.
 *
 * Locking, outermost first: the monitor lock; the node's barrier (a
 * writer holds it shared from the copy until its write is done;
 * backup-begin and -end hold it exclusive, so the freeze is one
 * instant); the stripe locks of the backup_disk (a writer holds the
 * stripes of its range exclusive, taken in ascending order, while it
 * copies the blocks and marks them saved; a reader holds one stripe
 * shared while it reads that region, so it never sees a block half
 * saved); the plugin's own locks.
 */
#ifndef CHECKPOINT_BACKUP_H
#define CHECKPOINT_BACKUP_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <jansson.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "qmp.h"
#include "txn.h"
#include "nodes.h"

/* Blocks saved to scratch are this big: a 4 KiB write saves 4 KiB. */
#define BACKUP_BLOCK 4096
/* Saved-block lookups and locks go by regions of this size. */
#define BACKUP_REGION (64 * 1024)
#define BACKUP_STRIPES 1024
/* Scratch is spread over several files, by 1 MiB pieces, so that
 * concurrent copies do not all queue on one file's inode lock.
 */
#define SCRATCH_FILES 8
#define SCRATCH_PIECE (1024 * 1024)

enum cbw_error_mode { BREAK_SNAPSHOT, BREAK_GUEST_WRITE };

struct backup;

struct backup_disk {
  struct backup_disk *next_on_node;     /* node->backups, barrier */
  struct backup *backup;
  struct node *node;
  char *export;                 /* NODE@ID or as given */
  uint64_t size;                /* frozen size */
  int scratch_fds[SCRATCH_FILES];
  /* needed: chunks an incremental backup may be asked for (NULL: all).
   * saved: blocks whose frozen contents are in scratch.
   * changed: chunks written since the freeze (reads of unneeded ones
   * must fail once changed).
   */
  struct bitmap *needed;
  struct bitmap *saved;
  struct bitmap *changed;
  pthread_rwlock_t stripes[BACKUP_STRIPES];
};

struct backup {
  struct backup *next;
  char *id;
  char *incremental;            /* base checkpoint, or NULL */
  char *checkpoint;             /* checkpoint created with it, or NULL */
  enum cbw_error_mode on_cbw_error;
  struct backup_disk *disks;    /* array */
  size_t nr_disks;
  /* Changed from any thread under the backup's lock (lock order:
   * backups_lock in backup.c, then this); ended and failed only ever
   * turn true and are also read with atomic loads, without the lock.
   */
  pthread_mutex_t lock;
  bool ended;                   /* backup-end ran: exports refuse I/O */
  bool failed;
  char *error;
  uint64_t copied_bytes;         /* atomic */
  unsigned connections;         /* open exports; the last one frees */
};

/* Monitor side (backup-commands.c, monitor lock held). */
extern struct backup *backups_list (void);
extern struct backup *backups_find (const char *id);
extern void backup_register_commands (void);
extern void backups_end_all (void);

/* Data path.  backup_open finds the export NAME of an active backup and
 * counts a connection (NULL if none); backup_close undoes it.
 */
extern struct backup_disk *backup_open (const char *name);
extern void backup_close (struct backup_disk *bd);
extern void backup_list_exports (struct nbdkit_exports *exports);

/* Before a guest write of [OFFSET, OFFSET+COUNT) passes down, with the
 * node's barrier held shared: save what each backup still needs.  -1
 * with *ERR when the write must fail (on-cbw-error=break-guest-write).
 */
extern int backup_before_write (nbdkit_next *next, struct node *n,
                                uint32_t count, uint64_t offset, int *err);

/* Reads and block status of a backup export. */
extern int backup_pread (nbdkit_next *next, struct backup_disk *bd,
                         void *buf, uint32_t count, uint64_t offset,
                         int *err);
extern int backup_extents (nbdkit_next *next, struct backup_disk *bd,
                           uint32_t count, uint64_t offset, uint32_t flags,
                           struct nbdkit_extents *extents, int *err);

/* Where scratch files go (scratch=, else state=, else $TMPDIR). */
extern void backup_set_scratch_dir (const char *dir);

#endif /* CHECKPOINT_BACKUP_H */
