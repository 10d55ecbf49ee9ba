/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Hosting the monitor, for the component that was given qmp=:
 * qmp_server_listen in .get_ready (errors show there), then
 * qmp_server_adopt_peer for the other component, qmp_server_start in
 * .after_fork (threads made before nbdkit forks would die), and
 * qmp_server_stop in .cleanup.
 */
#ifndef NC_QMP_SERVER_H
#define NC_QMP_SERVER_H

#include <stdbool.h>
#include "peer.h"

/* The monitor's parameters, for a component's .config, so that both
 * parse them alike: returns 1 if KEY was one (qmp=, qmp-max-clients=,
 * qmp-tls-certificates=, qmp-tls-psk=), 0 if not, -1 on a bad value
 * (reported).  qmp=VALUE replaces *ADDRESS (malloc'ed, NULL before)
 * with its canonical form (an absolute path, or tcp:ADDRESS:PORT) for
 * qmp_server_listen: a non-NULL *ADDRESS means that this component
 * hosts the monitor.
 */
extern int qmp_server_config (const char *key, const char *value,
                              char **address);
#define QMP_SERVER_CONFIG_HELP \
  "qmp=PATH             Serve the QMP monitor on this Unix socket (0600),\n" \
  "qmp=tcp:ADDR:PORT    or on TCP, with TLS only:\n" \
  "qmp-tls-certificates=DIR  x509: ca-cert.pem, server-cert.pem,\n" \
  "                     server-key.pem; clients need a certificate.\n" \
  "qmp-tls-psk=FILE     Pre-shared keys (username:hexkey lines).\n" \
  "qmp-max-clients=N    At most N monitor clients at once (64)."

/* Listen on ADDRESS (from qmp_server_config).  A TCP address without
 * TLS parameters, or TLS parameters for a Unix socket, are refused.
 */
extern int qmp_server_listen (const char *address);
/* Serve the commands of the component exporting SYMBOL and lend it
 * this monitor.  Returns its table, or NULL when it is not loaded.
 */
extern const struct qmp_peer *qmp_server_adopt_peer (const char *symbol);
extern int qmp_server_start (void);
extern void qmp_server_stop (void);

#endif /* NC_QMP_SERVER_H */
