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
 *   bitmap.NODE.HASH     the bits of the bitmap whose name's SHA-256
 *                        begins with HASH (16 hex digits; flagged in
 *                        node.NODE: older state, and crash-safety=none,
 *                        name them bitmap.NODE.I, by position)
 *   journal.NODE         while running (engines/journal.h)
 *   batch                a change of several of them being made
 *
 * Every save writes all the files of one change as one batch
 * (common/state/batch.h): a crash at any instant leaves, after the
 * next start-up, the files as before that change or as after it, never
 * a mixture (checkpoints, node files, bits and the journal that goes
 * with them).
 *
 * While nbdkit runs, node.NODE says "in use", as QEMU's in-use flag
 * does.  crash-safety=none: the bits are written only when nbdkit
 * shuts down cleanly (or the node is removed), so after a crash the
 * bitmaps load as inconsistent.  process (the default) and power: the
 * bits of a bitmap that does not record are saved whenever they change
 * (at the txn commit), and those of the recording ones whenever the
 * journal starts afresh: when the set of recording persistent bitmaps
 * or their bits change by a command, at the commit, with the barrier
 * held (bits, then the journal, then node.NODE).  Between those, the
 * journal records every write that dirties a clean chunk, before it
 * passes down.  After a crash with the same kernel boot id, a covered
 * bitmap is its saved bits OR the journal: a superset of the truth.
 * power also fsyncs all of it, the journal before each first touch.
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

#include "engines/crash-safety.h"

/* Open DIR and subscribe; before the nodes are added. */
extern int persist_start (const char *dir, enum crash_safety mode);
/* Load the checkpoints file (once, after persist_start, before the
 * nodes).
 */
extern int persist_load_checkpoints (void);
/* Save everything, bits included, and mark the nodes clean. */
extern void persist_save_all (void);

#endif /* CHECKPOINT_ENGINES_PERSIST_H */
