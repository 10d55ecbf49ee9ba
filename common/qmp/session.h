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
#include <sys/types.h>

#include "splitter.h"

/* Sends one message (a JSON text without the line end). */
typedef void (*qmp_send_fn) (void *opaque, const char *msg);

struct qmp_session {
  struct splitter splitter;
  bool negotiated;
  qmp_send_fn send;
  /* Optional: true while the client's replies wait to be read; input
   * is then left unread after the current value (backpressure).
   */
  bool (*hold) (void *opaque);
  void *opaque;
};

extern void qmp_session_init (struct qmp_session *s, qmp_send_fn send,
                              void *opaque);
extern void qmp_session_free (struct qmp_session *s);
extern void qmp_session_greet (struct qmp_session *s);
/* Run the requests in DATA.  Returns the bytes used, fewer than N
 * when hold () said so (feed the rest later), or -1 when the client
 * must be disconnected.
 */
extern ssize_t qmp_session_feed (struct qmp_session *s,
                                 const char *data, size_t n);
/* All of DATA, ignoring hold (); false when the client must go. */
extern bool qmp_session_input (struct qmp_session *s,
                               const char *data, size_t n);

#endif /* NC_QMP_SESSION_H */
