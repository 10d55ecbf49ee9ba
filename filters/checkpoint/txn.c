#include <config.h>

#include <stdlib.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "txn.h"
#include "nodes.h"
#include "persist.h"

void
txn_begin (struct txn *t)
{
  t->steps = NULL;
  t->nr = t->cap = 0;
  t->state_changed = false;
  nodes_barrier_raise ();
}

int
txn_push (struct txn *t, void (*undo) (void *), void (*done) (void *),
          void *data)
{
  if (t->nr == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    struct txn_step *p = realloc (t->steps, cap * sizeof *p);
    if (p == NULL) {
      if (undo)
        undo (data);
      if (done)
        done (data);
      return -1;
    }
    t->steps = p;
    t->cap = cap;
  }
  t->steps[t->nr++] = (struct txn_step) { undo, done, data };
  t->state_changed = true;
  return 0;
}

static void
txn_end (struct txn *t)
{
  size_t i;

  for (i = 0; i < t->nr; i++)
    if (t->steps[i].done)
      t->steps[i].done (t->steps[i].data);
  free (t->steps);
  t->steps = NULL;
  t->nr = t->cap = 0;
  nodes_barrier_lower ();
}

int
txn_commit (struct txn *t, struct qmp_error *err)
{
  /* Saved with the barrier still up (the files are not synced, so it
   * is quick): a change that cannot be recorded is not made.
   */
  if (t->state_changed && persist_save_metadata () == -1) {
    txn_abort (t);
    persist_save_metadata ();   /* put back what was half saved */
    qmp_error (err, "Cannot save the state directory (see nbdkit's log): "
               "nothing was changed");
    return -1;
  }
  txn_end (t);
  return 0;
}

void
txn_abort (struct txn *t)
{
  size_t i;

  for (i = t->nr; i-- > 0; )
    if (t->steps[i].undo)
      t->steps[i].undo (t->steps[i].data);
  txn_end (t);
}
