/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A batch: several files of a state directory replaced or removed as
 * one change, crash-atomically.  A reader after a crash at any instant
 * (or, with durable batches, a power cut) sees every file as before
 * the batch or every file as after it, once state_batch_recover has
 * run.
 *
 * How: each new file is first written under a staged name (a dot
 * file, which state_list skips).  The commit point is the atomic
 * replacement of DIR/batch, a state file listing what to do (rename a
 * staged file onto its name, or remove a name).  Then the steps are
 * applied and DIR/batch removed.  Every step can be repeated, so
 * recovery after a crash simply applies a batch that is still there;
 * staged files without a batch are temporary files that
 * state_remove_temps removes.
 *
 * "batch" is therefore a reserved name in a directory that uses
 * batches.  Like state.h: thread-safe for different batches, prints
 * nothing, errors through errno.
 */
#ifndef NC_STATE_BATCH_H
#define NC_STATE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_BATCH_NAME "batch"
#define STATE_BATCH_KIND 0x48435442     /* "BTCH" */

struct state_batch;

/* A new, empty batch in DIR.  NULL on ENOMEM. */
extern struct state_batch *state_batch_new (const char *dir);
/* Stage NAME's new contents (as state_write_flags; STATE_NO_SYNC:
 * not fsync'd).  On failure the batch is marked failed: its commit
 * then fails and changes nothing.
 */
extern int state_batch_write (struct state_batch *b, const char *name,
                              uint32_t kind, const void *payload,
                              size_t len, unsigned flags);
/* Stage the removal of NAME (a missing file is not an error). */
extern int state_batch_remove (struct state_batch *b, const char *name);
/* For a file that the caller writes itself (e.g. one kept open for
 * appending): the staged name to create in DIR, which the commit
 * renames onto NAME.  The string belongs to the batch.  NULL on
 * failure (the batch is marked failed).
 */
extern const char *state_batch_stage (struct state_batch *b,
                                      const char *name);
/* Make the batch durable when committed (fsync'd record and
 * directory), as state_write without STATE_NO_SYNC.
 */
extern void state_batch_set_durable (struct state_batch *b);
extern bool state_batch_empty (const struct state_batch *b);

/* Commit and free B.  -1 with errno: nothing changed, the staged files
 * are removed.  0: committed.  If a step could not be applied after
 * the commit point (a failing disk), the change stays committed and
 * DIR/batch stays, to be finished by the next batch or by
 * state_batch_recover.
 */
extern int state_batch_commit (struct state_batch *b);
/* Drop B and its staged files; nothing changed. */
extern void state_batch_abort (struct state_batch *b);

/* Finish a batch that a crash left committed: 1 if one was applied,
 * 0 if there was none, -1 with errno if it could not be read (EBADMSG:
 * damaged; it is then removed, as never committed) or applied.  Call
 * it at start-up before reading the directory and before
 * state_remove_temps.
 */
extern int state_batch_recover (const char *dir);

#endif /* NC_STATE_BATCH_H */
