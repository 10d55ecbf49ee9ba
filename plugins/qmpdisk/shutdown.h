/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: noticing that nbdkit is shutting down.
 *
 * nbdkit waits for every NBD connection to end before it calls
 * .cleanup, and nbdkit 1.32 tells a plugin nothing before that.  The
 * libnbd connections of nbd disks are NBD connections too, to another
 * server that may in turn hold one to us: if they stayed open until
 * .cleanup, neither side could ever finish.  So the plugin learns of
 * the shutdown itself, from the monitor's quit (qmp_on_quit) and by
 * chaining nbdkit's handlers of the signals that stop it, and then
 * cuts its NBD connections at once (disks_disconnect_remote).
 */
#ifndef QMPDISK_SHUTDOWN_H
#define QMPDISK_SHUTDOWN_H

#include <stdbool.h>

/* In .after_fork (nbdkit has installed its signal handlers by then):
 * chain them and start the thread that reacts.
 */
extern int shutdown_watch_start (void);

/* Shutdown has begun (quit): wake the thread.  Async-signal-safe. */
extern void shutdown_begin (void);

/* Readable once shutdown has begun; -1 before shutdown_watch_start.
 * For poll in slow operations that should give up then.
 */
extern int shutdown_fd (void);

/* In .cleanup: restore the signal handlers and join the thread. */
extern void shutdown_watch_stop (void);

#endif /* QMPDISK_SHUTDOWN_H */
