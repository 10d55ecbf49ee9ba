/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: hooks of the nbdkit callbacks for peers. */
#ifndef QMPDISK_QMPDISK_H
#define QMPDISK_QMPDISK_H

#include <stdbool.h>

/* A plugin with API version 2 cannot learn the export name of a
 * shared context (nbdkit_next_context_open with shared=1): .open has
 * no such parameter and nbdkit_export_name returns NULL there.  A
 * filter opening such a context calls this first, in the same thread;
 * the next .open in this thread uses NAME and forgets it.  NAME must
 * stay valid until nbdkit_next_context_open returns.  Pass NULL to
 * forget it without opening (e.g. after a failed open).
 */
extern void qmpdisk_set_open_export (const char *name);

/* Was nbdkit started with -r (readonly.c)? */
extern bool server_readonly (void);

#endif /* QMPDISK_QMPDISK_H */
