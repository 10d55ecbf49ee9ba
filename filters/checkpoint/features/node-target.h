/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A push job's target that is a node of this process (QEMU's
 * blockdev-backup): a plugin context of its own on the node, opened by
 * the monitor (so that a node that cannot be written fails the
 * command), written as a guest write of that node is: its recording
 * bitmaps mark the writes and its write hooks (a pull backup's
 * copy-before-write) see the old data first.  Used by the job's
 * threads alone, closed by the monitor once they have ended.
 */
#ifndef CHECKPOINT_FEATURES_NODE_TARGET_H
#define CHECKPOINT_FEATURES_NODE_TARGET_H

#include <stdint.h>
#include <stddef.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "qmp.h"
#include "core/node.h"

struct node_target;

/* N's context through BACKEND; SET_OPEN_EXPORT names the export
 * (NULL: a plugin with one disk).  NULL with *ERR.
 */
extern struct node_target *node_target_open (struct node *n,
                                             nbdkit_backend *backend,
                                             void (*set_open_export)
                                               (const char *),
                                             struct qmp_error *err);
extern void node_target_close (struct node_target *t);
extern struct node *node_target_node (const struct node_target *t);
/* From now on write the node's plugin context directly, not by the
 * node's write path: for writes made inside a guest write of another
 * node (sync none), which holds that node's barrier, so that taking
 * this one's could deadlock with a txn raising every barrier.  The
 * target's bitmaps then do not see these writes.
 */
extern void node_target_set_direct (struct node_target *t);

/* -1 with errno. */
extern int node_target_write (struct node_target *t, const void *buf,
                              size_t n, uint64_t offset);
extern int node_target_zero (struct node_target *t, uint64_t offset,
                             uint64_t n);
extern int node_target_flush (struct node_target *t);

#endif /* CHECKPOINT_FEATURES_NODE_TARGET_H */
