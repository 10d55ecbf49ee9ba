/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Hosting the monitor, for the component that was given qmp=PATH:
 * qmp_server_listen in .get_ready (errors show there), then
 * qmp_server_adopt_peer for the other component, qmp_server_start in
 * .after_fork (threads made before nbdkit forks would die), and
 * qmp_server_stop in .cleanup.
 */
#ifndef NC_QMP_SERVER_H
#define NC_QMP_SERVER_H

#include <stdbool.h>
#include "peer.h"

extern int qmp_server_listen (const char *path);
/* Serve the commands of the component exporting SYMBOL and lend it
 * this monitor.  Returns its table, or NULL when it is not loaded.
 */
extern const struct qmp_peer *qmp_server_adopt_peer (const char *symbol);
extern int qmp_server_start (void);
extern void qmp_server_stop (void);
extern bool qmp_server_listening (void);

#endif /* NC_QMP_SERVER_H */
