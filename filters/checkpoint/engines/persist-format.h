/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The state files' kinds and flags, and what persist.c and
 * persist-load.c share; nothing else includes this.
 */
#ifndef CHECKPOINT_ENGINES_PERSIST_FORMAT_H
#define CHECKPOINT_ENGINES_PERSIST_FORMAT_H

#include <stdbool.h>

#include "qmp.h"
#include "engines/crash-safety.h"
#include "core/node.h"

/* File kinds (the header's kind field of common/state). */
enum { KIND_CHECKPOINTS = 1, KIND_NODE = 2, KIND_BITMAP = 3 };

/* Flags of a bitmap in node.NODE. */
enum { F_RECORDING = 1, F_CHECKPOINT = 2, F_INCONSISTENT = 4,
       F_STABLE_NAME = 8 /* bits in bitmap.NODE.HASH, not .I */ };

extern const char *persist_dir (void);
extern enum crash_safety persist_mode (void);
/* The bits file of bitmap NAME, the I-th of node N (malloc'ed). */
extern char *persist_bits_file (const struct node *n, const char *name,
                                uint32_t i, bool stable);
/* process and power: bring N's files in step with its bitmaps (the
 * barrier held exclusive, see persist.h); DURABLE_NODE: fsync node.NODE
 * even in process mode.  -1 if a file could not be written (logged;
 * the journal and node.NODE keep their previous contents).
 */
extern int persist_sync_node (struct node *n, bool durable_node);
/* A node whose bitmaps have just been loaded: save them all and start
 * its journal (process, power); remove a stale journal (none).
 */
extern int persist_attach_node (struct node *n);
extern void persist_set_aside (const char *name);
/* CLEAN: the bits are saved too.  DURABLE: fsync'd. */
extern int persist_save_node (struct node *n, bool clean, bool durable);
/* Save the metadata (checkpoints, node files marked in use).  -1 if a
 * file could not be written (logged; it keeps its previous contents).
 */
extern int persist_save_metadata (void);
/* Load node.NODE for a node that has just appeared.  -1 with *ERR
 * refuses a node whose size differs from the saved one.
 */
extern int persist_load_node (struct node *n, struct qmp_error *err);

#endif /* CHECKPOINT_ENGINES_PERSIST_FORMAT_H */
