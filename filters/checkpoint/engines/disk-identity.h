/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Disk identity: what node.NODE records of the disk itself, so that a
 * disk changed while nbdkit was not running makes its bitmaps
 * inconsistent instead of silently wrong (issue 9, item 5).
 *
 * Where it comes from: the qmpdisk plugin's node_identity service
 * (fstat of the node's open descriptor, common/qmp/peer.h), or over a
 * stock plugin the one file= it was given (nbdkit's file plugin), by
 * stat.  Other plugins, the qmpdisk plugin's NBD nodes and a plugin
 * given several file= have none: nothing is checked.
 *
 * A file: device, inode, size and change time (st_ctim, to the
 * nanosecond); a block device: st_rdev and size.  The change time is
 * recorded only by a clean shutdown, after the last write (nbdkit's
 * own writes change it too); the saves while running record the rest,
 * which a restart after a crash checks.
 *
 * In node.NODE the identity comes after the bitmap entries, before
 * the clean byte (which stays last): a u32 length, then the fields.
 * A node file without it (older state) loads as before, unchecked.
 */
#ifndef CHECKPOINT_ENGINES_DISK_IDENTITY_H
#define CHECKPOINT_ENGINES_DISK_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

#include "peer.h"
#include "buffer.h"
#include "core/node.h"

/* What a node file says about its disk. */
enum saved_identity_kind {
  ID_ABSENT = -1,               /* not in the file (older state) */
  ID_NONE = 0,                  /* the disk had no file: unchecked */
  ID_FILE = 1,
  ID_BLOCK = 2,
  ID_UNKNOWN = 3,               /* it could not be taken at shutdown */
};

struct saved_identity {
  enum saved_identity_kind kind;
  bool has_ctime;               /* recorded by a clean shutdown */
  struct disk_identity id;
};

/* The sources (set before the nodes are added).  FN as the service of
 * common/qmp/peer.h.
 */
extern void disk_identity_use_service (int (*fn) (const char *node,
                                                  struct disk_identity *));
/* A file= seen passing to a stock plugin, made absolute: -1 on ENOMEM
 * (logged).
 */
extern int disk_identity_add_path (const char *abs);
extern void disk_identity_free_paths (void);

/* Append N's identity to a node record; CLEAN: with its change time. */
extern void disk_identity_put (struct state_buf *b, const struct node *n,
                               bool clean);
/* Read it after the bitmap entries of a node record: ID_ABSENT when
 * only the clean byte is left.  -1 if malformed.
 */
extern int disk_identity_get (struct state_reader *r,
                              struct saved_identity *out);
/* Is N's disk the one that was saved?  False after logging what
 * changed (then its bitmaps cannot be trusted).
 */
extern bool disk_identity_unchanged (const struct node *n,
                                     const struct saved_identity *saved);

#endif /* CHECKPOINT_ENGINES_DISK_IDENTITY_H */
