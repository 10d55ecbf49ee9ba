/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The filter's resource limits: set once from the parameters (max-*=)
 * before the monitor starts, read by the layers that enforce them.
 * The defaults and the reasons for them are in the man page's LIMITS
 * section.
 */
#ifndef CHECKPOINT_CORE_LIMITS_H
#define CHECKPOINT_CORE_LIMITS_H

struct checkpoint_limits {
  unsigned bitmaps_per_disk;    /* bitmaps_add (core/bitmap-ops.c) */
  unsigned checkpoints;         /* checkpoints_create (checkpoint-chain.c) */
  unsigned backups;             /* backup_begin (features/pull-backup.c) */
  unsigned backup_connections;  /* backup_export_open, all exports */
  unsigned jobs;                /* push_backup_create (push-backup.c) */
};

#define LIMIT_BITMAPS_PER_DISK 1024
#define LIMIT_CHECKPOINTS 1024
#define LIMIT_BACKUPS 16
#define LIMIT_BACKUP_CONNECTIONS 64
#define LIMIT_JOBS 16
/* The largest value a parameter may take (keeps counts in unsigned). */
#define LIMIT_MAX 1000000

extern struct checkpoint_limits limits;

#endif /* CHECKPOINT_CORE_LIMITS_H */
