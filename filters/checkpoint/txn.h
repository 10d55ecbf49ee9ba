/* Changes to bitmaps and checkpoints, all-or-nothing.
 *
 * Every change, from a single command or from a transaction, runs
 * inside a txn: it makes its change at once and pushes how to undo it
 * (and what to free once the change is final).  txn_commit keeps the
 * changes; txn_abort undoes them newest first.
 *
 * txn_begin also raises the write barrier on every node: it waits for
 * the guest writes in flight and holds new ones back until the txn
 * ends, so that no write lands between the actions of a transaction
 * and no write marks a bitmap that is being changed.  The monitor
 * lock is held throughout (txns run only in command handlers).
 */
#ifndef CHECKPOINT_TXN_H
#define CHECKPOINT_TXN_H

#include <stdbool.h>

#include "qmp.h"

struct txn_step {
  void (*undo) (void *data);    /* may be NULL */
  void (*done) (void *data);    /* after commit or undo; may be NULL */
  void *data;
};

struct txn {
  struct txn_step *steps;
  size_t nr, cap;
  bool state_changed;           /* persist metadata at commit */
};

extern void txn_begin (struct txn *t);
/* Record how to undo the change just made.  On ENOMEM the change is
 * undone at once and -1 returned, so the caller fails cleanly.
 */
extern int txn_push (struct txn *t, void (*undo) (void *),
                     void (*done) (void *), void *data);
/* Keep the changes and save the metadata.  If it cannot be saved,
 * the changes are undone instead: -1 with *ERR set.
 */
extern int txn_commit (struct txn *t, struct qmp_error *err);
extern void txn_abort (struct txn *t);

#endif /* CHECKPOINT_TXN_H */
