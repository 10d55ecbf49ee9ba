/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Push backup jobs (QEMU's drive-backup and blockdev-backup): a job (engines/job.h) that
 * copies a disk as it was when the job was created to a target, while
 * the guest goes on writing.  The freeze is the copy-before-write of
 * pull backups (engines/cbw.h), made inside a txn with every node's
 * barrier raised, so a group of jobs (a transaction) freezes at one
 * instant; the job's thread reads the frozen view through a context of
 * its own (nbdkit_next_context_open) and writes the target.
 *
 * Lifecycle: push_backup_create (monitor lock held, inside a txn)
 * makes the job (created) and its freeze; when the txn commits the job
 * starts, when it aborts the job is cancelled (created -> aborting ->
 * concluded -> null, as QEMU).  The job's driver undoes the freeze when
 * the job ends, whatever its end.
 *
 * Locking: the monitor lock (the job host's lock), then the nodes'
 * barriers, then the engines' locks.
 */
#ifndef CHECKPOINT_FEATURES_PUSH_BACKUP_H
#define CHECKPOINT_FEATURES_PUSH_BACKUP_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "qmp.h"
#include "core/txn.h"
#include "core/node.h"
#include "engines/job.h"

enum push_sync { PUSH_SYNC_FULL, PUSH_SYNC_INCREMENTAL, PUSH_SYNC_BITMAP,
                 PUSH_SYNC_NONE, PUSH_SYNC_TOP };
enum push_bitmap_mode { PUSH_BITMAP_NONE_GIVEN, PUSH_BITMAP_ON_SUCCESS,
                        PUSH_BITMAP_NEVER, PUSH_BITMAP_ALWAYS };
/* QEMU's BlockdevOnError, in its order.  What the job does when a read
 * of the frozen view (on-source-error) or a write of the target
 * (on-target-error) fails: report (the job fails), ignore (the chunk
 * is copied again, as QEMU 7.2 retries what is left), stop (the job
 * pauses until job-resume, which retries the chunk), enospc and auto
 * (stop on ENOSPC, report otherwise: QEMU's block job rule).
 */
enum push_on_error { PUSH_ON_ERROR_REPORT, PUSH_ON_ERROR_IGNORE,
                     PUSH_ON_ERROR_ENOSPC, PUSH_ON_ERROR_STOP,
                     PUSH_ON_ERROR_AUTO };

struct push_backup_spec {
  const char *job_id;           /* NULL: not given */
  const char *device;           /* node name */
  const char *target;           /* drive-backup: a file path or NBD URI */
  const char *target_node;      /* blockdev-backup: a node; else NULL */
  const char *format;           /* NULL: raw */
  bool existing;                /* mode=existing: do not create */
  enum push_sync sync;
  const char *bitmap;           /* NULL: none */
  enum push_bitmap_mode bitmap_mode;
  uint64_t speed;               /* bytes/s, 0: unlimited */
  enum push_on_error on_source_error, on_target_error;
  bool auto_finalize, auto_dismiss;
};

/* At start-up: where scratch goes; after fork: the backend the jobs
 * open their contexts on and, over a plugin that knows its disks by
 * export name (qmpdisk), how to name the export of a shared context
 * (NULL over a plugin with one disk, opened as "").
 */
extern void push_backups_set_scratch_dir (const char *dir);
extern void push_backups_set_backend (nbdkit_backend *backend,
                                      void (*set_open_export) (const char *));

/* Inside a txn (monitor lock held, every barrier raised): check SPEC
 * with QEMU's texts, open the target and freeze the device.  The job
 * starts when T commits.  -1 with *ERR (nothing left behind).
 */
extern int push_backup_create (struct txn *t,
                               const struct push_backup_spec *spec,
                               struct qmp_error *err);

/* A transaction with completion-mode grouped: the push backups created
 * between begin and end end together (a failure or cancel of one
 * cancels the others).  Monitor lock held.
 */
extern int push_backups_group_begin (struct qmp_error *err);
extern void push_backups_group_end (void);

/* Monitor lock held. */
extern bool job_is_push_backup (const struct job *job);
extern bool push_backups_use_node (const struct node *n);
extern int push_backup_set_speed (struct job *job, int64_t speed,
                                  struct qmp_error *err);
/* query-block-jobs' entry. */
extern json_t *push_backup_describe (struct job *job);

#endif /* CHECKPOINT_FEATURES_PUSH_BACKUP_H */
