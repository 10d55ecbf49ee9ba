/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* One client's protocol state: greeting, capabilities negotiation,
 * request checking and dispatch.  Independent of sockets so that it
 * can be tested by feeding bytes.
 */
#ifndef NC_QMP_SESSION_H
#define NC_QMP_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#include "splitter.h"

/* Sends one message (a JSON text without the line end). */
typedef void (*qmp_send_fn) (void *opaque, const char *msg);

struct qmp_session {
  struct splitter splitter;
  bool negotiated;
  qmp_send_fn send;
  void *opaque;
};

extern void qmp_session_init (struct qmp_session *s, qmp_send_fn send,
                              void *opaque);
extern void qmp_session_free (struct qmp_session *s);
extern void qmp_session_greet (struct qmp_session *s);
/* Returns false when the client must be disconnected. */
extern bool qmp_session_input (struct qmp_session *s,
                               const char *data, size_t n);

#endif /* NC_QMP_SESSION_H */
