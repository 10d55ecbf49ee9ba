/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-checkpoint-filter: dirty bitmaps, checkpoints and backups for
 * the disks of the plugin below, driven through a QMP monitor.
 *
 * The filter is built in layers.  Each layer uses only the layers below
 * it (and common/); check-layers.py checks the #include lines of
 * every file in make check.  Filter headers are always included with
 * their directory ("core/node.h"), which names their layer:
 *
 *   5 glue       checkpoint.c (the nbdkit callbacks), lifecycle.c
 *                (parameters, start-up and shutdown, the qmpdisk
 *                plugin's node hooks); this header
 *   4 qmp/       the QMP surface: one file per family of commands
 *                (bitmaps, checkpoints, backups, jobs, transaction,
 *                nodes), each command and argument documented in its
 *                table entry (the same tables feed query-qmp-schema
 *                and docs/qmp-reference.md); actions.h: how every
 *                change runs at one instant
 *   3 features/  pull backups (lifecycle, export registry), push
 *                backup jobs (drive-backup, blockdev-backup) and their
 *                targets (a file or NBD URI, or a node)
 *   2 engines/   block-copy (scratch, saved-block map, stripes),
 *                copy-before-write (a node write hook), snapshot-access
 *                (frozen-view reads), the job engine, persistence
 *                (subscribed to txn commits and node events)
 *   1 core/      the generic transaction, the node registry (write
 *                barrier, recording set, write hooks, events), dirty
 *                bitmaps and their operations, the checkpoint chain,
 *                the resource limits:
 *                no files, no nbdkit calls, no QMP registration, so
 *                it is unit-tested on its own (core/test-*.c)
 *
 * Locks, outermost first: the monitor lock (common/qmp); nodes_lock
 * (core/node.c); the nodes' barriers in list order; backups_lock and a
 * backup's lock (features/pull-backup.c), a push group's lock and a
 * push job's copy-pool lock (features/push-backup.c); the job engine's
 * lock (engines/job.c); block-copy's stripes in ascending order; the
 * plugin's own locks.
 */
#ifndef CHECKPOINT_CHECKPOINT_H
#define CHECKPOINT_CHECKPOINT_H

#include <stdint.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "server.h"            /* QMP_SERVER_CONFIG_HELP */

/* lifecycle.c: the filter's parameters and its life. */
extern int lifecycle_config (const char *key, const char *value);
#define lifecycle_config_help \
  QMP_SERVER_CONFIG_HELP "\n" \
  "state=<DIR>          Keep bitmaps and checkpoints in this directory.\n" \
  "scratch=<DIR>        Put backups' scratch files here (default: state=).\n" \
  "crash-safety=process|power|none  What state= bitmaps survive (default:\n" \
  "                     process: a kill -9 of nbdkit).\n" \
  "node-name=<NAME>     Node name of a single-export plugin's disk.\n" \
  "max-bitmaps-per-disk=<N> Bitmaps per disk (default 1024).\n" \
  "max-checkpoints=<N>  Checkpoints (default 1024).\n" \
  "max-backups=<N>      Active backups at once (default 16).\n" \
  "max-backup-connections=<N> NBD connections to all backup exports\n" \
  "max-jobs=<N>         Push backup jobs that exist at once (16).\n" \
  "                     (default 64)."
/* Before the plugin's .config_complete. */
extern int lifecycle_config_complete (void);
extern int lifecycle_get_ready (void);
extern int lifecycle_after_fork (nbdkit_backend *backend);
extern void lifecycle_cleanup (void);
extern void lifecycle_unload (void);

/* The node an NBD client's export name opens: a malloc'ed node name,
 * or NULL if there is none (then no such export).
 */
extern char *lifecycle_export_node (const char *exportname);
/* Does the plugin below see exports by name (qmpdisk), or only one? */
extern bool lifecycle_plugin_has_exports (void);

#endif /* CHECKPOINT_CHECKPOINT_H */
