/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* TLS for a monitor on TCP (qmp=tcp:ADDRESS:PORT), through gnutls:
 * x509 with client certificates required (qmp-tls-certificates=DIR,
 * nbdkit's file names) or a pre-shared key (qmp-tls-psk=FILE,
 * nbdkit's username:hexkey lines).  Sessions are non-blocking: a call
 * that would block fails with errno EAGAIN and is repeated when the
 * socket is ready in the direction qmp_tls_wants_write says.
 */
#ifndef NC_QMP_TLS_H
#define NC_QMP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct qmp_tls;

/* 1 if KEY is a TLS parameter (then 0/-1 through the return of
 * qmp_server_config), else 0.
 */
extern int qmp_tls_config (const char *key, const char *value);
extern bool qmp_tls_configured (void);
/* Load the credentials, at start-up, so that errors show there. */
extern int qmp_tls_load (void);
extern void qmp_tls_unload (void);

/* A server session over the connected, non-blocking FD. */
extern struct qmp_tls *qmp_tls_new (int fd);
extern void qmp_tls_free (struct qmp_tls *t);
/* 1 done, 0 call again (EAGAIN), -1 failed (logged). */
extern int qmp_tls_handshake (struct qmp_tls *t);
extern bool qmp_tls_wants_write (struct qmp_tls *t);
/* As recv and send: -1 with errno EAGAIN when it would block. */
extern ssize_t qmp_tls_recv (struct qmp_tls *t, void *buf, size_t n);
extern ssize_t qmp_tls_send (struct qmp_tls *t, const void *buf, size_t n);
/* Data already decrypted and waiting (poll would not show it). */
extern bool qmp_tls_pending (struct qmp_tls *t);
extern void qmp_tls_bye (struct qmp_tls *t);

#endif /* NC_QMP_TLS_H */
