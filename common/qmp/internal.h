/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Between the files of common/qmp only. */
#ifndef NC_QMP_INTERNAL_H
#define NC_QMP_INTERNAL_H

#include <stdbool.h>
#include <jansson.h>
#include "qmp.h"
#include "peer.h"

extern json_t *qmp_command_names (void);
/* FN on every command of every set in registration order; SHADOWED:
 * another set's command of that name answers instead.
 */
extern void qmp_foreach_command (void (*fn) (const struct qmp_command_set *,
                                             const struct qmp_command *,
                                             bool shadowed, void *),
                                 void *opaque);
extern void qmp_server_emit_event (const char *name, json_t *data);
extern json_t *qmp_event_new (const char *name, json_t *data);
extern void qmp_register_builtins (void);
/* Set by quit: refuse further commands and clients. */
extern bool qmp_shutting_down;
/* For quit: this component's qmp_on_quit function, then the adopted
 * peer's.
 */
extern void qmp_run_quit_hooks (void);

#endif /* NC_QMP_INTERNAL_H */
