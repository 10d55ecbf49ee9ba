/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The plugin's side of the QMP monitor: the qmp= parameter when the
 * plugin runs alone, its disk commands, and the peer table through
 * which the checkpoint filter serves those commands and learns about
 * the disks.
 */
#ifndef QMPDISK_MONITOR_H
#define QMPDISK_MONITOR_H

#include <stdbool.h>

/* 1 if KEY was the monitor's (then 0/-1 through *r), else 0. */
extern int monitor_config (const char *key, const char *value, int *r);
extern void monitor_register (void);
extern bool monitor_present (void);
extern int monitor_get_ready (void);
extern int monitor_after_fork (void);
extern void monitor_cleanup (void);

#endif /* QMPDISK_MONITOR_H */
