/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Pull backups: frozen, read-only NBD exports of the disks as they were
 * at the instant backup-begin ran (libvirt's pull mode; QEMU's
 * fleecing).  Each disk of a backup is a backup export kept frozen by
 * copy-before-write (engines/cbw.h) and read through
 * engines/snapshot-access.h.
 *
 * Lifecycle: backup_begin runs inside a txn (monitor lock held, every
 * node's barrier raised), so the freeze is one instant and is undone
 * with the transaction; backup_end always succeeds.  An ended or failed backup's
 * exports refuse new connections and fail I/O on open ones; the backup
 * is freed with its last connection.
 *
 * Locking, outermost first: the monitor lock; the node's barrier;
 * backups_lock (pull-backup.c: the list as the data path sees it, and
 * connection counts); a backup's lock (its failure); then the engines'
 * locks (block-copy.h).
 */
#ifndef CHECKPOINT_FEATURES_PULL_BACKUP_H
#define CHECKPOINT_FEATURES_PULL_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "qmp.h"
#include "core/txn.h"
#include "core/node.h"
#include "core/checkpoint-chain.h"
#include "engines/cbw.h"

struct backup;
struct backup_export;

struct backup_disk_spec {
  const char *node;
  const char *export;           /* NULL: NODE@ID */
};

struct backup_spec {
  const char *id;               /* NULL: backup-N */
  const char *incremental;      /* base checkpoint, or NULL */
  const char *checkpoint;       /* created at the same instant, or NULL */
  const char *checkpoint_description;
  /* Known nodes, each once (checked by the caller); NULL: every node. */
  const struct backup_disk_spec *disks;
  size_t nr_disks;
  enum cbw_on_error on_cbw_error;
};

/* Where scratch files go (scratch=, else state=, else $TMPDIR). */
extern void backups_set_scratch_dir (const char *dir);

/* Monitor side: monitor lock held; begin and end inside a txn. */
extern struct backup *backup_begin (struct txn *t,
                                    const struct backup_spec *spec,
                                    struct qmp_error *err);
/* Every node's barrier raised; cannot fail (nothing of it is saved):
 * the exports end and the scratch is given back at once, even when the
 * state directory is full.
 */
extern void backup_end (struct backup *b);
/* The checkpoint B created, if it is still there (not one that got its
 * name since); NULL otherwise.
 */
extern struct checkpoint *backup_own_checkpoint (const struct backup *b);
/* The running backup that created C, or NULL. */
extern struct backup *backup_of_checkpoint (const struct checkpoint *c);
extern struct backup *backups_find (const char *id);
extern const char *backup_id (const struct backup *b);
/* Newest first; NULL after the last. */
extern struct backup *backups_first (void);
extern struct backup *backup_next (const struct backup *b);
/* query-backups' entry, and backup-begin's "exports". */
extern json_t *backup_describe (struct backup *b);
extern json_t *backup_describe_exports (const struct backup *b);
extern bool backups_use_node (const struct node *n);
/* At shutdown (no connections left): every backup ends. */
extern void backups_end_all (void);

/* Data path.  backup_export_open finds an active backup's export NAME
 * and counts a connection (NULL if none; NULL with an error logged if
 * the backup has failed or max-backup-connections are open);
 * backup_export_close undoes it.
 */
extern struct backup_export *backup_export_open (const char *name);
extern void backup_export_close (struct backup_export *e);
extern void backup_exports_list (struct nbdkit_exports *exports);
extern const char *backup_export_node (const struct backup_export *e);
extern uint64_t backup_export_size (const struct backup_export *e);
extern int backup_export_pread (struct backup_export *e, nbdkit_next *next,
                                void *buf, uint32_t count, uint64_t offset,
                                int *err);
extern int backup_export_extents (struct backup_export *e,
                                  nbdkit_next *next, uint32_t count,
                                  uint64_t offset, uint32_t flags,
                                  struct nbdkit_extents *extents, int *err);

#endif /* CHECKPOINT_FEATURES_PULL_BACKUP_H */
