/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A node's write journal, DIR/journal.NODE: what makes its recording
 * persistent bitmaps survive a kill -9 (crash-safety=process) or a
 * power cut (crash-safety=power) without writing bits on every write.
 *
 * The file is a header (magic, version, the kernel boot id, the mode,
 * the names of the bitmaps it covers, a SHA-256 of all that) followed
 * by fixed-size records, one per guest write that dirtied a clean
 * chunk of a covered bitmap, appended with write(2) on O_APPEND before
 * that write passes down: once write(2) returns, the record is in the
 * page cache and survives the process.  In power mode it is also
 * fdatasync'd first; concurrent writers share one sync (group commit).
 *
 * It is started afresh (atomically replacing the old one) whenever the
 * covered bits have just been saved, so that after a crash each
 * covered bitmap is its saved bits OR the journal's ranges: a superset
 * of what was written.  A torn record at the end (a crash during
 * write(2)) is dropped: its write never passed down.
 */
#ifndef CHECKPOINT_ENGINES_JOURNAL_H
#define CHECKPOINT_ENGINES_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct journal;

/* A journal that is not yet started (no file).  NULL on ENOMEM. */
extern struct journal *journal_new (bool power);
extern void journal_free (struct journal *j);  /* closes, keeps the file */
extern bool journal_started (const struct journal *j);
/* Does the started journal cover exactly NAMES? */
extern bool journal_covers (const struct journal *j, char **names,
                            size_t nr);

/* Start DIR/journal.NODE afresh, covering NAMES (no write in flight).
 * -1 with errno: J keeps its old file.
 */
extern int journal_start (struct journal *j, const char *dir,
                          const char *node, char **names, size_t nr);
/* The same in two steps, for a change of several files made as one
 * (common/state/batch.h): write the new journal as DIR/FILE, which the
 * caller then renames onto journal.NODE; J goes on appending to its
 * old file until journal_switch, after the rename's commit;
 * journal_cancel forgets the new one (the caller removes FILE).
 */
extern int journal_prepare (struct journal *j, const char *dir,
                            const char *node, char **names, size_t nr,
                            const char *file);
extern void journal_switch (struct journal *j);
extern void journal_cancel (struct journal *j);
/* Record [OFFSET, OFFSET+LEN): a node_mark_observer_fn. */
extern int journal_append (void *j, uint64_t offset, uint64_t len);
/* After an append failed (a full state disk): remove the file, so that
 * a crash finds no journal and the bitmaps load inconsistent, and make
 * further appends no-ops until the next journal_start.  True the first
 * time (to log it once); -1 with errno if the file cannot be removed.
 */
extern int journal_break (struct journal *j);
extern bool journal_broken (struct journal *j);
/* Remove DIR/journal.NODE (after a clean save). */
extern int journal_remove (const char *dir, const char *node);

/* A journal read back after a crash. */
enum journal_status {
  JOURNAL_OK,
  JOURNAL_MISSING,
  JOURNAL_OTHER_BOOT,           /* written before the last reboot */
  JOURNAL_DAMAGED,              /* WHY says how */
};

struct journal_contents {
  char **names;                 /* the covered bitmaps */
  size_t nr_names;
  uint64_t *ranges;             /* offset, length, offset, length ... */
  size_t nr_ranges;
  bool power;                   /* written in power mode */
  size_t torn;                  /* bytes of a torn last record, dropped */
  const char *why;
};

extern enum journal_status journal_read (const char *dir, const char *node,
                                         struct journal_contents *c);
extern bool journal_contents_covers (const struct journal_contents *c,
                                     const char *name);
extern void journal_contents_free (struct journal_contents *c);

#endif /* CHECKPOINT_ENGINES_JOURNAL_H */
