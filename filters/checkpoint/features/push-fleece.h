/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* sync none (QEMU's old fleecing): no background copy; a write hook on
 * the node copies the old data of every job cluster (64 KiB) that a
 * guest write is about to change, the first time only, straight into
 * the job's target.  The target then holds the disk as it was at the
 * job's start wherever the guest has written since.
 *
 * Copies are serialised (one lock), so that a second write to a
 * cluster waits until the first has saved it.  A copy that fails lets
 * the guest write through (the guest never sees the error) and ends
 * the fleece: push_fleece_error says why.
 */
#ifndef CHECKPOINT_FEATURES_PUSH_FLEECE_H
#define CHECKPOINT_FEATURES_PUSH_FLEECE_H

#include <stdint.h>
#include <stddef.h>

#include "qmp.h"
#include "core/node.h"

/* Where the old data goes: -1 with errno. */
typedef int (*push_fleece_write_fn) (void *opaque, const void *buf,
                                     size_t n, uint64_t offset);

struct push_fleece;

extern struct push_fleece *push_fleece_new (struct node *n,
                                            push_fleece_write_fn write,
                                            void *opaque,
                                            struct qmp_error *err);
extern void push_fleece_free (struct push_fleece *f);
/* Barrier held exclusive (inside a txn).  -1 with *ERR. */
extern int push_fleece_attach (struct push_fleece *f, struct qmp_error *err);
extern void push_fleece_detach (struct push_fleece *f);
/* No copy runs or starts after this returns (the target may go). */
extern void push_fleece_stop (struct push_fleece *f);
/* Bytes copied so far; the errno that ended it, or 0. */
extern uint64_t push_fleece_copied (struct push_fleece *f);
extern int push_fleece_error (struct push_fleece *f);

#endif /* CHECKPOINT_FEATURES_PUSH_FLEECE_H */
