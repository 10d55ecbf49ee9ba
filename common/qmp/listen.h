/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The monitor's listening sockets.  Each returns the listening
 * descriptor, or -1 with the error reported.
 */
#ifndef NC_QMP_LISTEN_H
#define NC_QMP_LISTEN_H

/* A Unix socket of mode 0600 at PATH (a stale one is replaced). */
extern int qmp_listen_unix (const char *path);
/* TCP on ADDRESS:PORT ([ADDRESS]:PORT for IPv6). */
extern int qmp_listen_tcp (const char *spec);

#endif /* NC_QMP_LISTEN_H */
