/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Actions: the commands that may also run inside a transaction, and
 * the one way every change to the model runs: change_begin raises the
 * write barrier of every node (waiting for the guest writes in flight
 * and holding new ones back) and starts a txn; change_commit or
 * change_abort ends both.  So no write lands between the actions of a
 * transaction, and no write marks a bitmap that is being changed.
 * Only command handlers run changes (the monitor lock is held).
 *
 * An action's function serves both ways: as a command it runs in a
 * change of its own (action_run_one).
 */
#ifndef CHECKPOINT_QMP_ACTIONS_H
#define CHECKPOINT_QMP_ACTIONS_H

#include <jansson.h>

#include "qmp.h"
#include "core/txn.h"

struct txn_action {
  const char *type;             /* the command name, also the action type */
  const struct qmp_arg *args;
  /* Makes the change inside T.  Returns the command's return value, or
   * NULL after setting *ERR (the caller then aborts T).
   */
  json_t *(*run) (struct txn *t, json_t *args, struct qmp_error *err);
};

extern void change_begin (struct txn *t);
/* -1 with *ERR when the change could not be kept (then it is undone). */
extern int change_commit (struct txn *t, struct qmp_error *err);
extern void change_abort (struct txn *t);

/* Tables end with {NULL}; registered at load time. */
extern void actions_register (const struct txn_action *actions);
extern json_t *action_run_one (const struct txn_action *a, json_t *args,
                               struct qmp_error *err);

#endif /* CHECKPOINT_QMP_ACTIONS_H */
