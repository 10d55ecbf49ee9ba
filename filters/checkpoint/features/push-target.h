/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Where a push backup job writes: a raw file (created sparse, or
 * existing) or an NBD export (nbd://, nbd+unix:// URIs, through
 * libnbd: up to 4 connections when the server allows multi-conn, and
 * one more that flushes behind the copy).
 * Opened by the monitor (so that a bad target fails the command), then
 * written by the job's copy workers, concurrently.
 */
#ifndef CHECKPOINT_FEATURES_PUSH_TARGET_H
#define CHECKPOINT_FEATURES_PUSH_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"

struct push_target;

/* Is TARGET an NBD URI? */
extern bool push_target_is_nbd (const char *target);
/* A target for a disk of SIZE bytes.  EXISTING: a file is opened as it
 * is, not created.  -1 with *ERR (QEMU's "Could not create/open").
 */
extern struct push_target *push_target_open (const char *target,
                                             bool existing, uint64_t size,
                                             struct qmp_error *err);
/* Close; UNLINK: remove a file that this target created. */
extern void push_target_close (struct push_target *t, bool unlink_new);

/* Does the target read as zeros where nothing was written (a file we
 * created)?  Then zeros need not be written.
 */
extern bool push_target_reads_zeros (const struct push_target *t);
/* -1 with errno. */
extern int push_target_write (struct push_target *t, const void *buf,
                              size_t n, uint64_t offset);
extern int push_target_zero (struct push_target *t, uint64_t offset,
                             uint64_t n);
extern int push_target_flush (struct push_target *t);

#endif /* CHECKPOINT_FEATURES_PUSH_TARGET_H */
