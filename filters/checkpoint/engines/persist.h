/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Persistence: checkpoints and persistent bitmaps in the state
 * directory (state=), kept in step with the model by subscribing to
 * transaction commits and node events (the model never calls here).
 *
 * Files (common/state: atomic replace, checksums):
 *   checkpoints          every checkpoint, in creation order
 *   node.NODE            a node's size, its persistent bitmaps' names
 *                        and flags, and whether it was saved cleanly
 *   bitmap.NODE.I        the bits of the I-th bitmap of node.NODE
 *
 * The bits are written when nbdkit shuts down cleanly (or the node is
 * removed).  While nbdkit runs, node.NODE says "in use", as QEMU's
 * in-use flag does: after a crash its bitmaps load as inconsistent.
 * So only the in-use mark (written when a node loads) and the clean
 * save need fsync; changes while running are replaced atomically but
 * not synced, to keep checkpoint-create fast.  (Crash-safe bitmaps are
 * a later step; see TODO.)
 *
 * What it subscribes to:
 *   a txn committing     the metadata is saved first; if that fails
 *                        the txn is undone (a change that cannot be
 *                        recorded is not made) and the files put back
 *   a node added         its saved bitmaps are loaded (a size that
 *                        differs from the saved one refuses the node)
 *   a node resized       the metadata is saved
 *   a node removed       it is saved cleanly first
 *
 * All functions run with the monitor lock held (or single-threaded at
 * start and stop).  Errors go to nbdkit_error; a failure to save
 * leaves the previous files valid.
 */
#ifndef CHECKPOINT_ENGINES_PERSIST_H
#define CHECKPOINT_ENGINES_PERSIST_H

/* Open DIR and subscribe; before the nodes are added. */
extern int persist_start (const char *dir);
/* Load the checkpoints file (once, after persist_start, before the
 * nodes).
 */
extern int persist_load_checkpoints (void);
/* Save everything, bits included, and mark the nodes clean. */
extern void persist_save_all (void);

#endif /* CHECKPOINT_ENGINES_PERSIST_H */
