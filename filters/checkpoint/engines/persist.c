/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Saving the state directory, and the subscriptions (see persist.h). */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "bitmap.h"
#include "state.h"
#include "batch.h"
#include "buffer.h"
#include "core/bitmap-ops.h"
#include "core/checkpoint-chain.h"
#include "engines/disk-identity.h"
#include "engines/journal.h"
#include "engines/persist.h"
#include "engines/persist-format.h"

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

static const char *state_dir;
static enum crash_safety mode;

/* Each node's journal (process, power), found by the node. */
struct node_journal {
  struct node_journal *next;
  struct node *node;
  struct journal *j;
};
static struct node_journal *journals;

/* The save in progress.  Every file that one change writes goes into
 * one batch (common/state/batch.h), so that a crash leaves all of them
 * as before or all as after.  What the model learns from a save (bits
 * saved at a version, a journal started afresh) waits for the commit.
 */
static struct state_batch *batch;
static int mark (void *opaque, uint64_t offset, uint64_t len);
struct saved_bits {
  struct dirty_bitmap *d;
  uint64_t version;
};
DEFINE_VECTOR_TYPE (saved_bits_vector, struct saved_bits);
static saved_bits_vector saved_bits = empty_vector;
DEFINE_VECTOR_TYPE (node_ptrs, struct node *);
static node_ptrs restarted = empty_vector;   /* journals prepared */

const char *
persist_dir (void)
{
  return state_dir;
}

enum crash_safety
persist_mode (void)
{
  return mode;
}

static struct journal *
journal_of (struct node *n)
{
  struct node_journal *nj;

  for (nj = journals; nj; nj = nj->next)
    if (nj->node == n)
      return nj->j;
  return NULL;
}

static void
forget_journal (struct node *n)
{
  struct node_journal **pp, *nj;

  for (pp = &journals; *pp; pp = &(*pp)->next)
    if ((*pp)->node == n) {
      nj = *pp;
      *pp = nj->next;
      pthread_rwlock_wrlock (&n->barrier);
      node_set_mark_observer (n, NULL, NULL);
      pthread_rwlock_unlock (&n->barrier);
      journal_free (nj->j);
      free (nj);
      return;
    }
}

/* Open a batch unless one is open: true if this call opened it (then
 * it must end it), false inside another save.  -1 on ENOMEM.
 */
static int
begin_save (bool durable)
{
  if (batch) {
    if (durable)
      state_batch_set_durable (batch);
    return 0;
  }
  batch = state_batch_new (state_dir);
  if (batch == NULL) {
    nbdkit_error ("checkpoint: saving the state: %m");
    return -1;
  }
  if (durable || mode == CRASH_SAFETY_POWER)
    state_batch_set_durable (batch);
  return 1;
}

/* End the save begun by a begin_save that returned OWN; R is the
 * result of the saving, -1 to give it all up.  Returns R, or -1 if the
 * commit failed.
 */
static int
end_save (int own, int r)
{
  struct state_batch *b = batch;
  size_t i;

  if (own != 1)
    return own == -1 ? -1 : r;
  batch = NULL;
  if (r == 0 && state_batch_commit (b) == -1) {
    nbdkit_error ("checkpoint: saving the state in %s: %m: nothing was "
                  "changed there", state_dir);
    r = -1;
  }
  else if (r == -1)
    state_batch_abort (b);
  for (i = 0; i < saved_bits.len; i++)
    if (r == 0)
      saved_bits.ptr[i].d->saved_version = saved_bits.ptr[i].version;
  for (i = 0; i < restarted.len; i++) {
    struct node *n = restarted.ptr[i];
    struct journal *j = journal_of (n);
    if (j && r == 0) {
      journal_switch (j);
      node_set_mark_observer (n, mark, j);
    }
    else if (j)
      journal_cancel (j);
  }
  saved_bits.len = restarted.len = 0;
  return r;
}

/* Subscriptions: the model tells us what changed. */

static int
txn_prepare (void *opaque, struct qmp_error *err)
{
  /* Saved with the barrier still up (the files are not synced, so it
   * is quick): a change that cannot be recorded is not made.
   */
  if (persist_save_metadata () == -1) {
    qmp_error (err, "Cannot save the state directory (see nbdkit's log): "
               "nothing was changed");
    return -1;
  }
  return 0;
}

static void
txn_rolled_back (void *opaque)
{
  persist_save_metadata ();     /* put back what was half saved */
}

static const struct txn_commit_hook commit_hook = {
  .prepare = txn_prepare, .rolled_back = txn_rolled_back,
};

static void
node_resized (struct node *n)
{
  struct dirty_bitmap *d;

  if (mode == CRASH_SAFETY_NONE) {
    persist_save_metadata ();
    return;
  }
  /* Every bitmap was resized: save them all, no write in flight. */
  pthread_rwlock_wrlock (&n->barrier);
  for (d = n->bitmaps; d; d = d->next)
    d->version++;
  if (persist_sync_node (n, false) == -1)
    nbdkit_error ("checkpoint: the bitmaps of '%s' after its resize could "
                  "not be saved: after a crash they may load as before",
                  n->name);
  pthread_rwlock_unlock (&n->barrier);
}

static void remove_stale_bits (struct node *n);

/* After a clean save: what the node's files no longer need. */
static void
drop_after_clean (struct node *n)
{
  if (mode != CRASH_SAFETY_NONE) {
    journal_remove (state_dir, n->name);
    remove_stale_bits (n);
  }
}

/* A clean save of N failed: say what the next start will find. */
static void
say_not_saved (struct node *n)
{
  struct journal *j = journal_of (n);

  if (n->bitmaps)
    nbdkit_error ("checkpoint: the bitmaps of '%s' could not be saved "
                  "cleanly: %s", n->name,
                  j && journal_started (j) && !journal_broken (j)
                  ? "the next start recovers them from its journal"
                  : "they load as inconsistent at the next start");
}

static void
save_clean (struct node *n)
{
  if (persist_save_node (n, true, true) == 0)
    drop_after_clean (n);
  else
    say_not_saved (n);
  forget_journal (n);
}

static void
node_removing (struct node *n)
{
  save_clean (n);
}

static const struct node_events node_events = {
  .added = persist_load_node,
  .resized = node_resized,
  .removing = node_removing,
};

int
persist_start (const char *dir, enum crash_safety m)
{
  state_dir = dir;
  mode = m;
  if (state_dir_open (dir) == -1) {
    nbdkit_error ("checkpoint: state directory %s: %m", dir);
    return -1;
  }
  /* A change that a crash cut short after its commit is finished
   * before anything is read (staged files of one never committed are
   * temporary files).
   */
  switch (state_batch_recover (dir)) {
  case 1:
    nbdkit_debug ("checkpoint: finished a change of %s that a crash cut "
                  "short", dir);
    break;
  case -1:
    nbdkit_error ("checkpoint: %s/%s: %m: %s", dir, STATE_BATCH_NAME,
                  errno == EBADMSG ? "damaged, dropped (the change it "
                  "recorded is not made)" : "cannot finish the change "
                  "that a crash cut short");
    if (errno != EBADMSG)
      return -1;
    break;
  }
  state_remove_temps (dir);
  if (txn_register_commit_hook (&commit_hook) == -1 ||
      nodes_subscribe (&node_events) == -1) {
    nbdkit_error ("checkpoint: too many subscribers");
    return -1;
  }
  bitmaps_set_persistence (true);
  return 0;
}

/* Stage file NAME in the batch.  DURABLE: fsync'd.  Saves while
 * running need not be: their files
 * say "in use", so losing one to a power cut loses nothing that a
 * crash would not make inconsistent anyway.
 */
static int
save (const char *name, uint32_t kind, struct state_buf *b, bool durable)
{
  int r = -1;

  assert (batch != NULL);
  if (b->err)
    errno = b->err;
  else
    r = state_batch_write (batch, name, kind, b->data, b->len,
                           durable ? 0 : STATE_NO_SYNC);
  if (r == -1)
    nbdkit_error ("checkpoint: saving %s/%s: %m", state_dir, name);
  state_buf_free (b);
  return r;
}

/* checkpoints: count, then each one, then the current one's name. */
static int
save_checkpoints (bool durable)
{
  struct state_buf b = STATE_BUF_INIT;
  struct checkpoint *c;
  uint32_t nr = 0;
  size_t i;

  for (c = checkpoints_list (); c; c = c->next)
    nr++;
  state_put_u32 (&b, nr);
  for (c = checkpoints_list (); c; c = c->next) {
    state_put_string (&b, c->name);
    state_put_string (&b, c->parent ? c->parent->name : "");
    state_put_u8 (&b, c->description != NULL);
    state_put_string (&b, c->description ? c->description : "");
    state_put_u64 (&b, c->creation_time);
    state_put_u32 (&b, c->disks.len);
    for (i = 0; i < c->disks.len; i++)
      state_put_string (&b, c->disks.ptr[i]);
  }
  c = checkpoints_current ();
  state_put_string (&b, c ? c->name : "");
  /* Added later, so at the end (older files end before it): the
   * pending ones (pull backups' checkpoints), by position.
   */
  for (c = checkpoints_list (), nr = 0; c; c = c->next)
    nr += c->pending;
  state_put_u32 (&b, nr);
  for (c = checkpoints_list (), i = 0; c; c = c->next, i++)
    if (c->pending)
      state_put_u32 (&b, i);
  return save ("checkpoints", KIND_CHECKPOINTS, &b, durable);
}

static char *
node_file (const struct node *n)
{
  char *name;

  return asprintf (&name, "node.%s", n->name) == -1 ? NULL : name;
}

/* Stable names: positions shift when a bitmap is removed. */
char *
persist_bits_file (const struct node *n, const char *bitmap, uint32_t i,
                   bool stable)
{
  uint8_t sum[32];
  char *name;

  if (!stable)
    return asprintf (&name, "bitmap.%s.%u", n->name, i) == -1 ? NULL : name;
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, bitmap, strlen (bitmap),
                        sum) < 0) {
    errno = EIO;
    return NULL;
  }
  return asprintf (&name, "bitmap.%s.%02x%02x%02x%02x%02x%02x%02x%02x",
                   n->name, sum[0], sum[1], sum[2], sum[3], sum[4], sum[5],
                   sum[6], sum[7]) == -1 ? NULL : name;
}

/* Oldest first, so that loading keeps the order. */
DEFINE_VECTOR_TYPE (dirty_bitmap_ptrs, struct dirty_bitmap *);

/* Write the bits of N's I-th persistent bitmap D.  False if not. */
static bool
save_bits (const struct node *n, uint32_t i, struct dirty_bitmap *d,
           bool durable)
{
  CLEANUP_FREE char *name =
    persist_bits_file (n, d->name, i, mode != CRASH_SAFETY_NONE);
  uint64_t version = d->version;
  struct state_buf b = STATE_BUF_INIT;
  void *data;
  size_t len;

  if (name == NULL || bitmap_serialize (d->bm, &data, &len) == -1) {
    nbdkit_error ("checkpoint: saving bitmap %s: %m", d->name);
    return false;
  }
  b.data = data;
  b.len = b.cap = len;
  if (save (name, KIND_BITMAP, &b, durable) == -1)
    return false;
  if (saved_bits_vector_append (&saved_bits,
                                (struct saved_bits) { d, version }) == -1) {
    nbdkit_error ("checkpoint: saving bitmap %s: %m", d->name);
    return false;
  }
  return true;
}

/* node.NODE, oldest bitmap first so that loading keeps the order. */
static int
stage_node (struct node *n, bool clean, bool durable)
{
  CLEANUP_FREE char *name = node_file (n);
  struct state_buf b = STATE_BUF_INIT;
  dirty_bitmap_ptrs list = empty_vector;
  struct dirty_bitmap *d;
  uint32_t j;
  int r;

  if (name == NULL)
    return -1;
  /* One that a committing txn removes is not kept (see txn_prepare).
   * The list is newest first: append, then reverse (inserting each at
   * the front would cost a thousand moves per bitmap with a thousand
   * checkpoints).
   */
  for (d = n->bitmaps; d; d = d->next)
    if (d->persistent && !d->removing &&
        dirty_bitmap_ptrs_append (&list, d) == -1) {
      dirty_bitmap_ptrs_reset (&list);
      return -1;
    }
  for (j = 0; j < list.len / 2; j++) {
    d = list.ptr[j];
    list.ptr[j] = list.ptr[list.len - 1 - j];
    list.ptr[list.len - 1 - j] = d;
  }
  if (list.len == 0)            /* nothing to keep: record nothing */
    return state_batch_remove (batch, name);
  state_put_u64 (&b, n->size);
  state_put_u32 (&b, list.len);
  for (j = 0; j < list.len; j++) {
    d = list.ptr[j];
    bool ok = !d->inconsistent && (!clean || save_bits (n, j, d, true));
    state_put_string (&b, d->name);
    state_put_u32 (&b, bitmap_granularity (d->bm));
    state_put_u8 (&b, (d->recording ? F_RECORDING : 0) |
                  (d->checkpoint ? F_CHECKPOINT : 0) |
                  (ok ? 0 : F_INCONSISTENT) |
                  (mode != CRASH_SAFETY_NONE ? F_STABLE_NAME : 0));
  }
  disk_identity_put (&b, n, clean);
  /* Last, so that a file says "clean" only once its bits are saved. */
  state_put_u8 (&b, clean);
  r = save (name, KIND_NODE, &b, durable);
  dirty_bitmap_ptrs_reset (&list);
  return r;
}

int
persist_save_node (struct node *n, bool clean, bool durable)
{
  int own = begin_save (durable);

  return end_save (own, own == -1 ? -1 : stage_node (n, clean, durable));
}

/* The mark observer.  A record that cannot be written (a full state
 * disk) does not fail the guest's write: the journal is removed, so
 * that a crash from now on finds none and the bitmaps load as
 * inconsistent, and the next save that succeeds starts a new one.
 */
static int
mark (void *opaque, uint64_t offset, uint64_t len)
{
  struct journal *j = opaque;
  int e;

  if (journal_append (j, offset, len) == 0)
    return 0;
  e = errno;
  switch (journal_break (j)) {
  case 1:
    nbdkit_error ("checkpoint: writing the journal: %s: it is removed: "
                  "until the next command that saves the state succeeds, "
                  "a crash leaves the bitmaps inconsistent", strerror (e));
    return 0;
  case 0:
    return 0;
  default:
    nbdkit_error ("checkpoint: writing the journal: %s, and it cannot be "
                  "removed: %m: failing the write", strerror (e));
    errno = e;
    return -1;
  }
}

/* The names of N's recording persistent bitmaps, which its journal
 * must cover (a NULL-terminated array; its strings are N's).
 */
static const char **
recording_names (struct node *n, size_t *nr)
{
  struct dirty_bitmap *d;
  const char **v;
  size_t i = 0;

  for (d = n->bitmaps; d; d = d->next)
    i++;
  v = calloc (i + 1, sizeof *v);
  if (v == NULL)
    return NULL;
  i = 0;
  for (d = n->bitmaps; d; d = d->next)
    if (d->persistent && !d->removing && dirty_bitmap_records (d))
      v[i++] = d->name;
  *nr = i;
  return v;
}

/* A new journal for N, covering NAMES, renamed into place by the
 * batch; J appends to the old one until the commit (end_save).
 */
static int
start_journal (struct node *n, struct journal *j, const char **names,
               size_t nr)
{
  CLEANUP_FREE char *name = NULL;
  const char *staged;

  if (asprintf (&name, "journal.%s", n->name) == -1 ||
      (staged = state_batch_stage (batch, name)) == NULL ||
      journal_prepare (j, state_dir, n->name, (char **) names, nr,
                       staged) == -1 ||
      node_ptrs_append (&restarted, n) == -1) {
    nbdkit_error ("checkpoint: starting %s/journal.%s: %m", state_dir,
                  n->name);
    return -1;
  }
  return 0;
}

static int
stage_sync_node (struct node *n, bool durable_node)
{
  struct journal *j = journal_of (n);
  bool power = mode == CRASH_SAFETY_POWER, restart;
  CLEANUP_FREE const char **names = NULL;
  struct dirty_bitmap *d;
  size_t nr = 0;
  uint32_t i;

  if (j == NULL)                /* not attached: none, or loading */
    return stage_node (n, false, durable_node);
  names = recording_names (n, &nr);
  if (names == NULL) {
    nbdkit_error ("checkpoint: saving the bitmaps of '%s': %m", n->name);
    return -1;
  }
  /* A new journal when what it covers changed, or their bits did by a
   * command (a clear must not come back from the old journal).
   */
  restart = !journal_covers (j, (char **) names, nr) || journal_broken (j);
  for (d = n->bitmaps; d; d = d->next)
    if (d->persistent && !d->removing && dirty_bitmap_records (d) &&
        d->version != d->saved_version)
      restart = true;
  /* The bits first: the journal and node file rely on them.  The
   * position is unused with stable names.
   */
  for (d = n->bitmaps, i = 0; d; d = d->next, i++)
    if (d->persistent && !d->inconsistent && !d->removing &&
        ((restart && dirty_bitmap_records (d)) ||
         d->version != d->saved_version) &&
        !save_bits (n, i, d, power))
      return -1;
  if (restart && start_journal (n, j, names, nr) == -1)
    return -1;
  return stage_node (n, false, power || durable_node);
}

int
persist_sync_node (struct node *n, bool durable_node)
{
  int own = begin_save (durable_node);

  return end_save (own, own == -1 ? -1 : stage_sync_node (n, durable_node));
}

int
persist_attach_node (struct node *n)
{
  struct node_journal *nj;
  struct dirty_bitmap *d;
  int r;

  if (mode == CRASH_SAFETY_NONE) {
    journal_remove (state_dir, n->name);  /* only none writes here now */
    return 0;
  }
  nj = calloc (1, sizeof *nj);
  if (nj == NULL || (nj->j = journal_new (mode == CRASH_SAFETY_POWER))
      == NULL) {
    free (nj);
    return -1;
  }
  nj->node = n;
  nj->next = journals;
  journals = nj;
  /* Bits loaded from positional files or with a journal replayed are
   * not saved as they are (persist-load.c leaves those with
   * saved_version 0): save them under stable names before the new
   * journal starts.
   */
  for (d = n->bitmaps; d; d = d->next)
    d->version = 1;
  pthread_rwlock_wrlock (&n->barrier);
  r = persist_sync_node (n, true);
  pthread_rwlock_unlock (&n->barrier);
  return r;
}

int
persist_save_metadata (void)
{
  int own = begin_save (false), r = own == -1 ? -1 : 0;
  struct node *n;

  if (r == 0)
    r = save_checkpoints (mode == CRASH_SAFETY_POWER);
  for (n = nodes_list (); n && r == 0; n = n->next)
    r = stage_sync_node (n, false);
  return end_save (own, r);
}

/* Bits files of N that no bitmap of N names any more (removed ones, or
 * positional ones replaced by stable names).  Only names that are
 * exactly bitmap.N.DIGITS or bitmap.N.HEX16: another node's name may
 * begin with N and a dot.
 */
static void
remove_stale_bits (struct node *n)
{
  CLEANUP_FREE char *prefix = NULL;
  struct dirty_bitmap *d;
  char **names = NULL;
  size_t nr = 0, i, plen;

  if (asprintf (&prefix, "bitmap.%s.", n->name) == -1 ||
      state_list (state_dir, NULL, &names, &nr) == -1)
    return;
  plen = strlen (prefix);
  for (i = 0; i < nr; i++) {
    const char *rest = names[i] + plen;
    bool keep = false;

    if (strncmp (names[i], prefix, plen) != 0 || rest[0] == '\0' ||
        strspn (rest, "0123456789abcdef") != strlen (rest))
      continue;
    for (d = n->bitmaps; d && !keep; d = d->next) {
      CLEANUP_FREE char *f = NULL;
      if (!d->persistent)
        continue;
      f = persist_bits_file (n, d->name, 0, true);
      keep = f == NULL || strcmp (f, names[i]) == 0;
    }
    if (!keep)
      state_remove (state_dir, names[i]);
  }
  state_list_free (names, nr);
}

void
persist_save_all (void)
{
  struct node *n;

  int own, r;

  if (!state_dir)
    return;
  /* One batch: a crash during a clean shutdown leaves the state of
   * the run (in use, with its journals) or the clean one.
   */
  own = begin_save (true);
  r = own == -1 ? -1 : save_checkpoints (true);
  for (n = nodes_list (); n && r == 0; n = n->next)
    r = stage_node (n, true, true);
  if (end_save (own, r) == 0)
    for (n = nodes_list (); n; n = n->next)
      drop_after_clean (n);
  else
    for (n = nodes_list (); n; n = n->next)
      say_not_saved (n);
  for (n = nodes_list (); n; n = n->next)
    forget_journal (n);
}

static int
load_one_checkpoint (struct state_reader *r)
{
  CLEANUP_FREE char *name = NULL, *parent = NULL, *desc = NULL;
  string_vector disks = empty_vector;
  uint8_t has_desc = 0;
  uint64_t ctime = 0;
  uint32_t nr = 0, i;

  state_get_string (r, &name);
  state_get_string (r, &parent);
  state_get_u8 (r, &has_desc);
  state_get_string (r, &desc);
  state_get_u64 (r, &ctime);
  state_get_u32 (r, &nr);
  if (r->err || nr > r->left / 4 || string_vector_reserve (&disks, nr) == -1)
    return -1;
  for (i = 0; i < nr && r->err == 0; i++) {
    char *disk = NULL;
    if (state_get_string (r, &disk) == 0)
      string_vector_append (&disks, disk);
  }
  if (r->err) {
    string_vector_free_all (&disks);
    return -1;
  }
  return checkpoints_restore (name, parent[0] ? parent : NULL,
                              has_desc ? desc : NULL, ctime, &disks);
}

/* The pending checkpoints, by their positions among those loaded. */
static void
load_pending (struct state_reader *r)
{
  struct checkpoint *c;
  uint32_t k = 0, i, pos = 0;

  state_get_u32 (r, &k);
  for (i = 0; i < k && r->err == 0; i++) {
    if (state_get_u32 (r, &pos) == -1)
      break;
    for (c = checkpoints_list (); c && pos > 0; c = c->next)
      pos--;
    if (c == NULL)
      r->err = EBADMSG;
    else
      c->pending = true;
  }
}

/* Keep a damaged state file for whoever wants to look at it, out of
 * the way of the next save.
 */
void
persist_set_aside (const char *name)
{
  CLEANUP_FREE char *from = NULL, *to = NULL;

  if (asprintf (&from, "%s/%s", state_dir, name) == -1 ||
      asprintf (&to, "%s/%s.corrupt", state_dir, name) == -1 ||
      rename (from, to) == -1)
    nbdkit_debug ("checkpoint: setting %s aside: %m", name);
  else
    nbdkit_error ("checkpoint: %s is damaged: kept as %s", from, to);
}

/* A damaged checkpoints file loses the checkpoints, not the disk: their
 * bitmaps then load as plain inconsistent bitmaps (persist-load.c).
 */
int
persist_load_checkpoints (void)
{
  CLEANUP_FREE void *data = NULL;
  CLEANUP_FREE char *current = NULL;
  struct state_reader r;
  size_t len;
  uint32_t nr = 0, i;
  bool bad = false;

  if (!state_dir)
    return 0;
  if (state_read (state_dir, "checkpoints", KIND_CHECKPOINTS,
                  &data, &len) == -1) {
    if (errno == ENOENT)
      return 0;
    nbdkit_error ("checkpoint: %s/checkpoints: %m: checkpoints are lost",
                  state_dir);
    persist_set_aside ("checkpoints");
    return 0;
  }
  state_reader_init (&r, data, len);
  state_get_u32 (&r, &nr);
  /* One that is refused (a name twice, ENOMEM) loses them all. */
  for (i = 0; i < nr && !bad; i++)
    bad = load_one_checkpoint (&r) == -1;
  state_get_string (&r, &current);
  if (!bad && r.err == 0 && r.left > 0)
    load_pending (&r);
  if (bad || r.err || state_reader_end (&r) == -1) {
    checkpoints_free_all ();
    nbdkit_error ("checkpoint: %s/checkpoints is malformed: checkpoints "
                  "are lost", state_dir);
    persist_set_aside ("checkpoints");
    return 0;
  }
  checkpoints_set_current (checkpoints_find (current));
  return 0;
}
