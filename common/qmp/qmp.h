/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The QMP monitor: what a component (plugin or filter) uses to offer
 * commands and send events.  The wire protocol is QEMU 7.2's; the
 * contract is docs/qmp-reference.md, generated from the tables.
 *
 * A component declares its commands in a table of struct qmp_command
 * and registers it with qmp_register_commands.  Arguments are checked
 * against the table before the handler runs, with QEMU's error texts,
 * so a handler sees only arguments of the declared types.
 *
 * Handlers run one at a time (under the monitor lock, see server.c),
 * in the thread of the client that sent the command, never in an NBD
 * request thread.
 */
#ifndef NC_QMP_H
#define NC_QMP_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

/* Error classes as QEMU 7.2 uses them. */
#define QMP_ERROR_GENERIC "GenericError"
#define QMP_ERROR_COMMAND_NOT_FOUND "CommandNotFound"
#define QMP_ERROR_DEVICE_NOT_ACTIVE "DeviceNotActive"

/* Limits of the protocol (docs/qmp-reference.md). */
#define QMP_MAX_MESSAGE (1024 * 1024)
#define QMP_MAX_DEPTH 64
/* A bad message skipped for longer than this disconnects its client. */
#define QMP_MAX_SKIP (16 * 1024 * 1024)

struct qmp_error {
  const char *class;            /* NULL: no error */
  char *desc;                   /* malloc'ed */
};

extern void qmp_error_set (struct qmp_error *err, const char *class,
                           const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));
/* GenericError, the usual case. */
#define qmp_error(err, ...) qmp_error_set ((err), QMP_ERROR_GENERIC, __VA_ARGS__)
extern void qmp_error_clear (struct qmp_error *err);

enum qmp_type {
  QMP_STR,
  QMP_BOOL,
  QMP_INT,                      /* int64 */
  QMP_UINT32,
  QMP_UINT64,                   /* non-negative int64 */
  QMP_ARRAY,
  QMP_OBJECT,
  QMP_ANY,
};

/* Each table entry carries its documentation: one source for the
 * reference (docs/qmp-reference.md, generated from x-query-qmp-docs),
 * query-qmp-schema and the checks.  Doc strings are plain text,
 * sentences, in the style of QEMU's qapi/block-core.json.
 */
struct qmp_arg {
  const char *name;
  enum qmp_type type;
  bool optional;
  const char *doc;              /* its meaning; for an optional one, what
                                 * its absence means */
};

/* ARGS: the checked arguments (an object; never NULL).  Returns the
 * "return" value (a new reference), or NULL after setting *ERR.
 */
typedef json_t *(*qmp_handler) (json_t *args, struct qmp_error *err);

struct qmp_command {
  const char *name;
  const struct qmp_arg *args;   /* ends with {NULL}; NULL for none */
  qmp_handler handler;
  const char *doc;              /* what it does */
  const char *returns;          /* the reply, field by field */
  const char *errors;           /* each error's text, and when */
};

struct qmp_command_set {
  const char *component;        /* "monitor", "qmpdisk", "checkpoint" */
  const struct qmp_command *commands;   /* ends with {NULL} */
};

/* Argument checking, also for nested objects (transaction actions,
 * {"node", "name"} pairs).  WHAT is the prefix of the parameter names
 * in messages ("" at the top level, "data." inside an action).
 */
extern bool qmp_check_args (const struct qmp_arg *spec, json_t *args,
                            const char *what, struct qmp_error *err);

/* Accessors for checked arguments: the default when absent. */
extern const char *qmp_arg_str (json_t *args, const char *name,
                                const char *def);
extern bool qmp_arg_bool (json_t *args, const char *name, bool def);
extern int64_t qmp_arg_int (json_t *args, const char *name, int64_t def);

/* Commands of this component.  Call in .load or .config_complete,
 * before the monitor starts; SET must live until unload.
 */
extern void qmp_register_commands (const struct qmp_command_set *set);
extern const struct qmp_command *qmp_find_command (const char *name);

/* Send an event to every client that has negotiated capabilities.
 * DATA is stolen (may be NULL for an event without payload).  Safe
 * from any thread; never blocks on a slow client.
 */
extern void qmp_emit_event (const char *name, json_t *data);

/* Run FN with the monitor lock held, so that it cannot interleave with
 * a command handler (for background threads that change state the
 * commands read, e.g. jobs).
 */
extern void qmp_lock (void);
extern void qmp_unlock (void);

/* FN runs when quit has started nbdkit's shutdown, in the monitor
 * thread with the monitor lock held, whichever component hosts the
 * monitor (the host's quit calls its own FN and its peer's).  nbdkit
 * waits for every NBD connection to end before .cleanup, so this is
 * where a component drops connections that it holds itself.  FN must
 * not block.
 */
extern void qmp_on_quit (void (*fn) (void));

#endif /* NC_QMP_H */
