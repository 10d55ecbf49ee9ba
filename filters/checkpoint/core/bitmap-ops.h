/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's dirty bitmap operations on a node, with QEMU's checks and
 * error texts.  Each changes the node at once and adds its undo to the
 * txn, so that single commands and transactions share this code.
 *
 * Preconditions: the monitor lock held (lookups need no more); the
 * changing calls also need every node's barrier raised (they run
 * inside a txn, see qmp/actions.h).
 */
#ifndef CHECKPOINT_CORE_BITMAP_OPS_H
#define CHECKPOINT_CORE_BITMAP_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"
#include "core/txn.h"
#include "core/node.h"

/* Whether persistent bitmaps can be kept (a state directory was
 * given); set once at start-up by whoever keeps them.
 */
extern void bitmaps_set_persistence (bool available);
extern bool bitmaps_persistence (void);

extern struct dirty_bitmap *bitmaps_find (struct node *n, const char *name);
/* NAME on node NODE for a command; NULL with QEMU's error if either is
 * missing ("Node 'N' not found", "Dirty bitmap 'NAME' not found"), or
 * (when CHANGE) the bitmap is busy or inconsistent.
 */
extern struct dirty_bitmap *bitmaps_lookup (const char *node,
                                            const char *name, bool change,
                                            struct node **np,
                                            struct qmp_error *err);

extern int bitmaps_add (struct txn *t, struct node *n, const char *name,
                        uint32_t granularity, bool persistent,
                        bool disabled, struct qmp_error *err);
/* Removed when T commits; busy until then. */
extern int bitmaps_remove (struct txn *t, struct node *n,
                           struct dirty_bitmap *d, struct qmp_error *err);
/* What D says can no longer be trusted (its changes are unknown). */
extern int bitmaps_set_inconsistent (struct txn *t, struct node *n,
                                     struct dirty_bitmap *d,
                                     struct qmp_error *err);
extern int bitmaps_clear (struct txn *t, struct node *n,
                          struct dirty_bitmap *d, struct qmp_error *err);
extern int bitmaps_set_recording (struct txn *t, struct node *n,
                                  struct dirty_bitmap *d, bool on,
                                  struct qmp_error *err);
/* TARGET |= SRC, keeping a copy of TARGET for undo. */
extern int bitmaps_merge (struct txn *t, struct node *n,
                          struct dirty_bitmap *target,
                          const struct bitmap *src, struct qmp_error *err);
/* Mark D a checkpoint's bitmap or a plain one. */
extern int bitmaps_set_checkpoint (struct txn *t, struct dirty_bitmap *d,
                                   bool on, struct qmp_error *err);

#endif /* CHECKPOINT_CORE_BITMAP_OPS_H */
