/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A generic transaction: changes made at once, each with how to undo
 * it, kept or undone together (after QEMU's include/qemu/transactions.h).
 *
 * Whoever changes something calls txn_add with the step's operations:
 * undo runs if the transaction aborts (newest step first), commit if it
 * commits (oldest first), and clean last either way, to free what the
 * step holds.  The transaction knows nothing of what its steps do: no
 * locks and no saving here.  Whoever runs a transaction provides the
 * exclusion it needs (the QMP layer raises the nodes' write barrier,
 * see qmp/actions.h).
 *
 * Commit hooks are for subscribers that must accept a change before it
 * is final (persistence saves the metadata there).  txn_commit runs
 * every hook's prepare, in registration order; if one fails, the
 * transaction aborts and each hook that was asked hears rolled_back.
 * Hooks are registered while single-threaded (at start-up).
 */
#ifndef CHECKPOINT_CORE_TXN_H
#define CHECKPOINT_CORE_TXN_H

#include <stdbool.h>

#include "qmp.h"
#include "vector.h"

struct txn_step_ops {
  void (*undo) (void *opaque);          /* each may be NULL */
  void (*commit) (void *opaque);
  void (*clean) (void *opaque);
};

struct txn_step {
  const struct txn_step_ops *ops;
  void *opaque;
};

DEFINE_VECTOR_TYPE (txn_steps, struct txn_step);

struct txn {
  txn_steps steps;
};

#define TXN_INIT { .steps = empty_vector }

/* Record how to undo the change just made.  -1 on ENOMEM: the change
 * is undone and cleaned at once, so the caller simply fails.
 */
extern int txn_add (struct txn *t, const struct txn_step_ops *ops,
                    void *opaque);
/* Has anything been changed? */
extern bool txn_changed (const struct txn *t);
/* Keep the changes: 0.  -1 with *ERR when a commit hook refused them;
 * they are undone then.  T is empty again either way.
 */
extern int txn_commit (struct txn *t, struct qmp_error *err);
extern void txn_abort (struct txn *t);

struct txn_commit_hook {
  /* A transaction with changes is about to commit: 0 to let it. */
  int (*prepare) (void *opaque, struct qmp_error *err);
  /* It was undone after this hook's prepare ran (or failed). */
  void (*rolled_back) (void *opaque);
  void *opaque;
};

/* At most TXN_MAX_HOOKS; -1 if full. */
#define TXN_MAX_HOOKS 4
extern int txn_register_commit_hook (const struct txn_commit_hook *hook);
/* For unit tests: forget every hook. */
extern void txn_reset_commit_hooks (void);

#endif /* CHECKPOINT_CORE_TXN_H */
