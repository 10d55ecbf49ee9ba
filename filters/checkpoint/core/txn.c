/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The generic transaction (see txn.h). */
#include <config.h>

#include <stdlib.h>

#include "core/txn.h"

static struct txn_commit_hook hooks[TXN_MAX_HOOKS];
static size_t nr_hooks;

int
txn_register_commit_hook (const struct txn_commit_hook *hook)
{
  if (nr_hooks == TXN_MAX_HOOKS)
    return -1;
  hooks[nr_hooks++] = *hook;
  return 0;
}

void
txn_reset_commit_hooks (void)
{
  nr_hooks = 0;
}

int
txn_add (struct txn *t, const struct txn_step_ops *ops, void *opaque)
{
  if (txn_steps_append (&t->steps, (struct txn_step) { ops, opaque }) == -1) {
    if (ops->undo)
      ops->undo (opaque);
    if (ops->clean)
      ops->clean (opaque);
    return -1;
  }
  return 0;
}

bool
txn_changed (const struct txn *t)
{
  return t->steps.len > 0;
}

static void
clean_all (struct txn *t)
{
  size_t i;

  for (i = 0; i < t->steps.len; i++)
    if (t->steps.ptr[i].ops->clean)
      t->steps.ptr[i].ops->clean (t->steps.ptr[i].opaque);
  txn_steps_reset (&t->steps);
}

static void
undo_all (struct txn *t)
{
  size_t i;

  for (i = t->steps.len; i-- > 0; )
    if (t->steps.ptr[i].ops->undo)
      t->steps.ptr[i].ops->undo (t->steps.ptr[i].opaque);
}

int
txn_commit (struct txn *t, struct qmp_error *err)
{
  size_t i, asked;

  for (asked = 0; txn_changed (t) && asked < nr_hooks; asked++)
    if (hooks[asked].prepare (hooks[asked].opaque, err) == -1) {
      undo_all (t);
      for (i = 0; i <= asked; i++)
        if (hooks[i].rolled_back)
          hooks[i].rolled_back (hooks[i].opaque);
      clean_all (t);
      return -1;
    }
  for (i = 0; i < t->steps.len; i++)
    if (t->steps.ptr[i].ops->commit)
      t->steps.ptr[i].ops->commit (t->steps.ptr[i].opaque);
  clean_all (t);
  return 0;
}

void
txn_abort (struct txn *t)
{
  undo_all (t);
  clean_all (t);
}
