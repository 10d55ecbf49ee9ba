/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The checkpoint chain: libvirt's checkpoints over a node's bitmaps.
 *
 * Checkpoints are kept in creation order; each names its disks.  On
 * each disk, the checkpoints that cover it form a chain in which only
 * the newest one's bitmap records: the bitmap of checkpoint k holds the
 * changes from k to the next checkpoint of that disk.  "Changed since
 * K" is the OR of K's bitmap and every later one on the disk, built on
 * demand, so a guest write costs one bitmap however many checkpoints
 * there are.
 *
 * All functions run with the monitor lock held; the changing ones
 * inside a txn with the barrier raised (as bitmap-ops.h).  A
 * checkpoint's bitmap is persistent when persistence is available
 * (bitmaps_persistence).
 */
#ifndef CHECKPOINT_CORE_CHECKPOINT_CHAIN_H
#define CHECKPOINT_CORE_CHECKPOINT_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"
#include "core/txn.h"
#include "core/node.h"

DEFINE_VECTOR_TYPE (string_vector, char *);

struct checkpoint {
  struct checkpoint *next;      /* creation order, oldest first */
  struct checkpoint *parent;
  char *name;
  uint64_t serial;              /* unique while the filter runs: a name
                                 * may come back, a serial never */
  char *description;            /* may be NULL */
  int64_t creation_time;        /* seconds */
  string_vector disks;          /* node names */
  bool pending;                 /* created by a backup that has not
                                 * ended with success yet */
};

extern struct checkpoint *checkpoints_find (const char *name);
extern struct checkpoint *checkpoints_list (void);
extern struct checkpoint *checkpoints_current (void);
extern bool checkpoint_covers (const struct checkpoint *c, const char *node);

/* The bitmap of N that holds what changed on N since checkpoint C: a
 * new bitmap (the caller frees it), or NULL with *ERR set.
 */
extern struct bitmap *checkpoints_changed_since (const struct checkpoint *c,
                                                 struct node *n,
                                                 struct qmp_error *err);

/* Create checkpoint NAME over the nodes named in DISKS (NULL: every
 * node), which must be known, named once, and have no bitmap NAME yet.
 */
extern struct checkpoint *checkpoints_create (struct txn *t, const char *name,
                                              const char *description,
                                              const string_vector *disks,
                                              struct qmp_error *err);
/* libvirt's REDEFINE: checkpoint NAME again over the plain bitmaps
 * of its name on DISKS (NULL: every node that has one), creating and
 * clearing nothing.  It goes right after PARENT (NULL: first, a root)
 * and takes over PARENT's children; CTIME < 0 means now.  Refused
 * unless each bitmap is there, consistent, idle, no checkpoint's yet
 * and persistent when persistence is available, and unless on each
 * disk the result keeps "only the newest checkpoint's bitmap records"
 * and creation times keep the chain's order.  The redefined checkpoint
 * becomes current when it is the newest.
 */
extern struct checkpoint *checkpoints_redefine (struct txn *t,
                                                const char *name,
                                                const char *description,
                                                const string_vector *disks,
                                                const char *parent,
                                                int64_t ctime,
                                                struct qmp_error *err);
extern int checkpoints_delete (struct txn *t, struct checkpoint *c,
                               bool metadata_only, struct qmp_error *err);
/* Mark C pending (a backup made it and has not ended with success) or
 * no longer; undone with T.  -1 on ENOMEM.
 */
extern int checkpoints_set_pending (struct txn *t, struct checkpoint *c,
                                    bool pending, struct qmp_error *err);

/* Loading state: add a checkpoint as it was saved (no bitmaps made),
 * taking over DISKS (emptied, also on error).  -1 with errno EEXIST
 * if NAME is taken (a file that says so is malformed), ENOMEM.
 */
extern int checkpoints_restore (const char *name, const char *parent,
                                const char *description, int64_t ctime,
                                string_vector *disks);
extern void checkpoints_set_current (struct checkpoint *c);
extern void checkpoints_free_all (void);

/* Free the strings of V and V itself. */
extern void string_vector_free_all (string_vector *v);

#endif /* CHECKPOINT_CORE_CHECKPOINT_CHAIN_H */
