/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Reads of a frozen view kept by copy-before-write (QEMU's
 * block/snapshot-access.c): data and block status of the disk as it
 * was at the freeze, or an error, never newer data.
 *
 * Block status of an incremental view encodes its bitmap in
 * base:allocation (DESIGN.md): an unneeded chunk is a hole without
 * zero ("read it from the base"); a needed one reports the disk's
 * allocation, saved blocks as data.
 */
#ifndef CHECKPOINT_ENGINES_SNAPSHOT_ACCESS_H
#define CHECKPOINT_ENGINES_SNAPSHOT_ACCESS_H

#include <stdint.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "engines/cbw.h"

/* NEXT is a read-only plugin connection to the view's node.  -1 with
 * *ERR (and an nbdkit_error) on error.
 */
extern int snapshot_pread (struct cbw *c, nbdkit_next *next, void *buf,
                           uint32_t count, uint64_t offset, int *err);
extern int snapshot_extents (struct cbw *c, nbdkit_next *next,
                             uint32_t count, uint64_t offset, uint32_t flags,
                             struct nbdkit_extents *extents, int *err);

#endif /* CHECKPOINT_ENGINES_SNAPSHOT_ACCESS_H */
