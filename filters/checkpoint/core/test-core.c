/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the filter's core: the transaction, the node registry,
 * the bitmap operations and the checkpoint chain, linked without
 * nbdkit, persistence or the monitor (as the layering promises).
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitmap.h"
#include "core/txn.h"
#include "core/node.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "test-check.h"


#define MiB (1024 * 1024)
#define CHUNK 65536

/* An error's text contains WHAT; the error is cleared. */
static bool
error_says (struct qmp_error *err, const char *what)
{
  bool ok = err->class && err->desc && strstr (err->desc, what);

  if (!ok)
    fprintf (stderr, "expected an error with '%s', got '%s'\n", what,
             err->desc ? err->desc : "(none)");
  qmp_error_clear (err);
  return ok;
}

/* ---- the transaction ---- */

static char trace[64];

static void
note (char c)
{
  size_t n = strlen (trace);
  trace[n] = c;
  trace[n + 1] = '\0';
}

static void step_undo (void *p) { note (* (char *) p - 'a' + 'A'); }
static void step_commit (void *p) { note (* (char *) p); }
static void step_clean (void *p) { note ('.'); }

static const struct txn_step_ops trace_ops = {
  .undo = step_undo, .commit = step_commit, .clean = step_clean,
};

static int hook_result;
static int hook_prepare (void *o, struct qmp_error *err)
{
  note ('p');
  if (hook_result == -1)
    qmp_error (err, "refused by the hook");
  return hook_result;
}
static void hook_rolled_back (void *o) { note ('r'); }

static void
test_txn (void)
{
  static char a = 'a', b = 'b', c = 'c';
  static const struct txn_commit_hook hook = {
    hook_prepare, hook_rolled_back, NULL,
  };
  struct txn t = TXN_INIT;
  struct qmp_error err = { 0 };

  /* Commit: oldest first, then every clean. */
  trace[0] = '\0';
  CHECK (!txn_changed (&t));
  txn_add (&t, &trace_ops, &a);
  txn_add (&t, &trace_ops, &b);
  CHECK (txn_changed (&t));
  CHECK (txn_commit (&t, &err) == 0 && strcmp (trace, "ab..") == 0);
  CHECK (!txn_changed (&t));

  /* Abort: newest first. */
  trace[0] = '\0';
  txn_add (&t, &trace_ops, &a);
  txn_add (&t, &trace_ops, &b);
  txn_add (&t, &trace_ops, &c);
  txn_abort (&t);
  CHECK (strcmp (trace, "CBA...") == 0);

  /* A commit hook that accepts runs before the commit steps ... */
  CHECK (txn_register_commit_hook (&hook) == 0);
  trace[0] = '\0';
  hook_result = 0;
  txn_add (&t, &trace_ops, &a);
  CHECK (txn_commit (&t, &err) == 0 && strcmp (trace, "pa.") == 0);
  /* ... is not asked when nothing changed ... */
  trace[0] = '\0';
  CHECK (txn_commit (&t, &err) == 0 && trace[0] == '\0');
  /* ... and one that refuses undoes the change. */
  trace[0] = '\0';
  hook_result = -1;
  txn_add (&t, &trace_ops, &a);
  txn_add (&t, &trace_ops, &b);
  CHECK (txn_commit (&t, &err) == -1 && strcmp (trace, "pBAr..") == 0);
  CHECK (error_says (&err, "refused by the hook"));
  txn_reset_commit_hooks ();
}

/* ---- the node registry ---- */

static int refuse_added;
static int events_added, events_removing, events_resized;

static int
ev_added (struct node *n, struct qmp_error *err)
{
  events_added++;
  if (refuse_added) {
    qmp_error (err, "Disk '%s' refused by a subscriber", n->name);
    return -1;
  }
  return 0;
}
static void ev_resized (struct node *n) { events_resized++; }
static void ev_removing (struct node *n) { events_removing++; }

static const struct node_events events = {
  ev_added, ev_resized, ev_removing,
};

struct hook_log {
  unsigned calls;
  uint64_t offset;
  uint32_t count;
  int fail_with;
};

static int
write_hook (void *opaque, struct nbdkit_next_ops *next, uint64_t offset,
            uint32_t count, int *err)
{
  struct hook_log *log = opaque;

  log->calls++;
  log->offset = offset;
  log->count = count;
  if (log->fail_with) {
    *err = log->fail_with;
    return -1;
  }
  return 0;
}

/* A guest write through the node's write path, as the glue does it. */
static int
guest_write (struct node *n, uint64_t offset, uint32_t count, int *err)
{
  int r;

  if (node_write_begin (n, offset, count) == -1) {
    *err = errno;
    return -1;
  }
  r = node_run_write_hooks (n, NULL, offset, count, err);
  node_write_end (n);
  return r;
}

static void
test_nodes (void)
{
  struct qmp_error err = { 0 };
  struct hook_log h1 = { 0 }, h2 = { 0 };
  struct node *a, *b;
  int e = 0;

  CHECK (nodes_subscribe (&events) == 0);
  a = nodes_add ("sda", 64 * MiB, &err);
  b = nodes_add ("sdb", 32 * MiB, &err);
  CHECK (a && b && events_added == 2);
  CHECK (nodes_list () == a && a->next == b && b->next == NULL);
  CHECK (nodes_find ("sdb") == b && nodes_find ("sdc") == NULL);
  CHECK (nodes_lookup ("sdc", &err) == NULL &&
         error_says (&err, "Cannot find device='sdc' nor node-name='sdc'"));

  /* A subscriber may refuse a node: it is not there afterwards, and
   * those that had accepted it hear it go.
   */
  refuse_added = 1;
  CHECK (nodes_add ("sdx", MiB, &err) == NULL &&
         error_says (&err, "refused by a subscriber"));
  CHECK (nodes_find ("sdx") == NULL);
  refuse_added = 0;

  /* Connections count. */
  CHECK (nodes_open ("sda") == a && a->connections == 1);
  CHECK (nodes_open ("nope") == NULL);
  nodes_close (a);
  CHECK (a->connections == 0);

  /* Write hooks see each write, in order of addition, and fail it. */
  nodes_barrier_raise ();
  CHECK (node_add_write_hook (a, write_hook, &h1) == 0);
  CHECK (node_add_write_hook (a, write_hook, &h2) == 0);
  nodes_barrier_lower ();
  CHECK (guest_write (a, 4096, 512, &e) == 0);
  CHECK (h1.calls == 1 && h1.offset == 4096 && h1.count == 512 &&
         h2.calls == 1);
  h1.fail_with = ENOSPC;
  CHECK (guest_write (a, 0, 1, &e) == -1 && e == ENOSPC);
  CHECK (h2.calls == 1);                /* the write stopped at h1 */
  nodes_barrier_raise ();
  node_remove_write_hook (a, &h1);
  nodes_barrier_lower ();
  CHECK (guest_write (a, 0, 1, &e) == 0 && h1.calls == 2 && h2.calls == 2);
  nodes_barrier_raise ();
  node_remove_write_hook (a, &h2);
  nodes_barrier_lower ();
  CHECK (a->hooks.len == 0);

  /* Writes to b mark nothing of a's. */
  CHECK (guest_write (b, 0, MiB, &e) == 0);

  nodes_remove (b);
  CHECK (events_removing == 1 && nodes_find ("sdb") == NULL);
  CHECK (nodes_list () == a && a->next == NULL);
}

/* ---- bitmap operations ---- */

/* A change in a txn of its own, as the QMP layer runs it. */
#define CHANGE(call)                                                    \
  ({                                                                    \
    struct txn _t = TXN_INIT;                                           \
    int _r;                                                             \
    nodes_barrier_raise ();                                             \
    _r = (call);                                                        \
    if (_r == 0)                                                        \
      _r = txn_commit (&_t, &err);                                      \
    else                                                                \
      txn_abort (&_t);                                                  \
    nodes_barrier_lower ();                                             \
    _r;                                                                 \
  })
#define T (&_t)

static uint64_t
count (struct node *n, const char *name)
{
  return bitmap_count_bytes (bitmaps_find (n, name)->bm);
}

static void
test_bitmap_ops (void)
{
  struct qmp_error err = { 0 };
  struct node *a = nodes_find ("sda");
  struct dirty_bitmap *d;
  struct txn t = TXN_INIT;
  int e;

  CHECK (CHANGE (bitmaps_add (T, a, "b1", CHUNK, false, false, &err)) == 0);
  CHECK (CHANGE (bitmaps_add (T, a, "b1", CHUNK, false, false, &err)) == -1 &&
         error_says (&err, "Bitmap already exists: b1"));
  CHECK (CHANGE (bitmaps_add (T, a, "g", 1000, false, false, &err)) == -1 &&
         error_says (&err, "Granularity must be power of 2"));
  CHECK (CHANGE (bitmaps_add (T, a, "", CHUNK, false, false, &err)) == -1 &&
         error_says (&err, "Bitmap name cannot be empty"));
  bitmaps_set_persistence (false);
  CHECK (CHANGE (bitmaps_add (T, a, "p", CHUNK, true, false, &err)) == -1 &&
         error_says (&err, "no state directory"));
  CHECK (CHANGE (bitmaps_add (T, a, "off", 512, false, true, &err)) == 0);
  CHECK (a->recording.len == 1);        /* b1 records, off does not */

  /* Writes mark recording bitmaps only, chunk by chunk. */
  CHECK (guest_write (a, 10, 1, &e) == 0 && guest_write (a, MiB, 1, &e) == 0);
  CHECK (count (a, "b1") == 2 * CHUNK && count (a, "off") == 0);

  /* Undone changes leave the bits as they were. */
  nodes_barrier_raise ();
  d = bitmaps_find (a, "b1");
  CHECK (bitmaps_clear (&t, a, d, &err) == 0 && count (a, "b1") == 0);
  CHECK (bitmaps_set_recording (&t, a, d, false, &err) == 0 &&
         a->recording.len == 0);
  CHECK (bitmaps_merge (&t, a, bitmaps_find (a, "off"), d->bm, &err) == 0);
  txn_abort (&t);
  nodes_barrier_lower ();
  CHECK (count (a, "b1") == 2 * CHUNK && a->recording.len == 1 &&
         count (a, "off") == 0);

  /* Merge across granularities, committed. */
  CHECK (CHANGE (bitmaps_merge (T, a, bitmaps_find (a, "off"),
                                bitmaps_find (a, "b1")->bm, &err)) == 0);
  CHECK (count (a, "off") == 2 * CHUNK);

  /* Removal happens at commit: until then the bitmap is busy. */
  nodes_barrier_raise ();
  d = bitmaps_find (a, "off");
  CHECK (bitmaps_remove (&t, a, d, &err) == 0 && dirty_bitmap_busy (d));
  CHECK (bitmaps_lookup ("sda", "off", true, NULL, &err) == NULL &&
         error_says (&err, "currently in use"));
  CHECK (txn_commit (&t, &err) == 0 && bitmaps_find (a, "off") == NULL);
  nodes_barrier_lower ();

  /* Inconsistent: out of the recording set, refused for changes. */
  CHECK (CHANGE (bitmaps_set_inconsistent (T, a, bitmaps_find (a, "b1"),
                                           &err)) == 0);
  CHECK (a->recording.len == 0);
  CHECK (bitmaps_lookup ("sda", "b1", true, NULL, &err) == NULL &&
         error_says (&err, "inconsistent"));
  CHECK (CHANGE (bitmaps_remove (T, a, bitmaps_find (a, "b1"), &err)) == 0);
  CHECK (a->bitmaps == NULL);
}

/* ---- the checkpoint chain ---- */

static struct checkpoint *
create (const char *name)
{
  struct qmp_error err = { 0 };
  struct checkpoint *c = NULL;

  CHANGE ((c = checkpoints_create (T, name, NULL, NULL, &err)) ? 0 : -1);
  qmp_error_clear (&err);
  return c;
}

static uint64_t
changed_since (const char *name)
{
  struct qmp_error err = { 0 };
  struct bitmap *bm = checkpoints_changed_since (checkpoints_find (name),
                                                 nodes_find ("sda"), &err);
  uint64_t bytes = bm ? bitmap_count_bytes (bm) : UINT64_MAX;

  bitmap_free (bm);
  qmp_error_clear (&err);
  return bytes;
}

static void
test_chain (void)
{
  struct qmp_error err = { 0 };
  struct node *a = nodes_find ("sda");
  struct checkpoint *c1, *c2, *c3;
  string_vector disks = empty_vector;
  int e;

  c1 = create ("c1");
  CHECK (c1 && checkpoints_current () == c1 && c1->parent == NULL);
  CHECK (guest_write (a, 0, 1, &e) == 0);
  c2 = create ("c2");
  CHECK (c2 && c2->parent == c1 && checkpoints_current () == c2);
  /* One recording bitmap however many checkpoints. */
  CHECK (a->recording.len == 1 && bitmaps_find (a, "c2")->recording &&
         !bitmaps_find (a, "c1")->recording);
  CHECK (guest_write (a, CHUNK, 1, &e) == 0);
  c3 = create ("c3");
  CHECK (guest_write (a, 2 * CHUNK, 1, &e) == 0);
  CHECK (changed_since ("c1") == 3 * CHUNK && changed_since ("c2") ==
         2 * CHUNK && changed_since ("c3") == CHUNK);
  CHECK (create ("c3") == NULL);                /* already exists */

  /* Unknown and repeated disks. */
  string_vector_append (&disks, (char *) "sdq");
  CHECK (CHANGE (checkpoints_create (T, "x", NULL, &disks, &err) ? 0 : -1)
         == -1 && error_says (&err, "nor node-name='sdq'"));
  disks.ptr[0] = (char *) "sda";
  string_vector_append (&disks, (char *) "sda");
  CHECK (CHANGE (checkpoints_create (T, "x", NULL, &disks, &err) ? 0 : -1)
         == -1 && error_says (&err, "named twice"));
  string_vector_reset (&disks);
  CHECK (checkpoints_find ("x") == NULL);

  /* Deleting the middle one keeps every "changed since" exact. */
  CHECK (CHANGE (checkpoints_delete (T, c2, false, &err)) == 0);
  CHECK (checkpoints_find ("c2") == NULL && bitmaps_find (a, "c2") == NULL);
  CHECK (c3->parent == c1);
  CHECK (changed_since ("c1") == 3 * CHUNK && changed_since ("c3") == CHUNK);

  /* Deleting the newest: its parent records again. */
  CHECK (CHANGE (checkpoints_delete (T, c3, false, &err)) == 0);
  CHECK (checkpoints_current () == c1 && bitmaps_find (a, "c1")->recording);
  CHECK (guest_write (a, 5 * CHUNK, 1, &e) == 0);
  CHECK (changed_since ("c1") == 4 * CHUNK);

  /* An aborted create leaves no trace. */
  {
    struct txn t = TXN_INIT;
    nodes_barrier_raise ();
    CHECK (checkpoints_create (&t, "c4", "d", NULL, &err) != NULL);
    CHECK (checkpoints_current () != c1 && bitmaps_find (a, "c4"));
    txn_abort (&t);
    nodes_barrier_lower ();
  }
  CHECK (checkpoints_current () == c1 && checkpoints_find ("c4") == NULL &&
         bitmaps_find (a, "c4") == NULL && bitmaps_find (a, "c1")->recording);

  /* metadata-only leaves a plain bitmap with the same bits. */
  CHECK (CHANGE (checkpoints_delete (T, c1, true, &err)) == 0);
  CHECK (checkpoints_list () == NULL && checkpoints_current () == NULL);
  CHECK (bitmaps_find (a, "c1") && !bitmaps_find (a, "c1")->checkpoint &&
         count (a, "c1") == 4 * CHUNK);
}

/* Loading state: a name that is taken is refused (a state file that
 * names a checkpoint twice is malformed), and DISKS is emptied.
 */
static void
test_restore (void)
{
  string_vector disks = empty_vector;
  char *d;

  checkpoints_free_all ();
  CHECK ((d = strdup ("sda")) && string_vector_append (&disks, d) == 0);
  CHECK (checkpoints_restore ("r1", NULL, "first", 1000, &disks) == 0);
  CHECK (disks.len == 0 && checkpoints_find ("r1") &&
         checkpoint_covers (checkpoints_find ("r1"), "sda"));
  CHECK ((d = strdup ("sda")) && string_vector_append (&disks, d) == 0);
  errno = 0;
  CHECK (checkpoints_restore ("r1", "r1", NULL, 2000, &disks) == -1 &&
         errno == EEXIST && disks.len == 0);
  CHECK (checkpoints_list () == checkpoints_find ("r1") &&
         checkpoints_list ()->next == NULL &&
         checkpoints_list ()->creation_time == 1000);
  CHECK (checkpoints_restore ("r2", "r1", NULL, 2000, &disks) == 0 &&
         checkpoints_find ("r2")->parent == checkpoints_find ("r1"));
  string_vector_reset (&disks);
  checkpoints_free_all ();
}

int
main (void)
{
  test_txn ();
  test_nodes ();
  test_bitmap_ops ();
  test_chain ();
  test_restore ();
  checkpoints_free_all ();
  nodes_free_all ();
  return test_report ();
}
