/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* What state.c lends batch.c; nothing else includes this. */
#ifndef NC_STATE_PRIVATE_H
#define NC_STATE_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Staged files are temporary files (state_remove_temps, state_list). */
#define STATE_STAGED_FORMAT ".%s.tmp.staged"

/* Write a state file straight to DIR/STAGED (no rename; fsync'd unless
 * STATE_NO_SYNC).  On failure no file is left.
 */
extern int state_write_staged (const char *dir, const char *staged,
                               uint32_t kind, const void *payload,
                               size_t len, unsigned flags);
extern bool state_name_ok (const char *name);

#endif /* NC_STATE_PRIVATE_H */
