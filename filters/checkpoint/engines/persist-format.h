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
#include "core/node.h"

/* File kinds (the header's kind field of common/state). */
enum { KIND_CHECKPOINTS = 1, KIND_NODE = 2, KIND_BITMAP = 3 };

/* Flags of a bitmap in node.NODE. */
enum { F_RECORDING = 1, F_CHECKPOINT = 2, F_INCONSISTENT = 4 };

extern const char *persist_dir (void);
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
