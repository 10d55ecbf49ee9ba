/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Crash-atomic changes of several state files (see batch.h).
 *
 * The record DIR/batch is a state file (so a torn or damaged one is
 * told apart): a count, then per step an operation byte and the name
 * it applies to.  A rename step's source is the name's staged name.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "state.h"
#include "state-private.h"
#include "buffer.h"
#include "batch.h"

enum { STEP_RENAME = 1, STEP_REMOVE = 2 };

struct step {
  uint8_t op;
  char *name;
  char *staged;                 /* STEP_RENAME */
};

struct state_batch {
  char *dir;
  struct step *steps;
  size_t nr, cap;
  bool failed;
  bool durable;
};

struct state_batch *
state_batch_new (const char *dir)
{
  struct state_batch *b = calloc (1, sizeof *b);

  if (b == NULL || (b->dir = strdup (dir)) == NULL) {
    free (b);
    return NULL;
  }
  return b;
}

static char *
staged_name (const char *name)
{
  char *s;

  return asprintf (&s, STATE_STAGED_FORMAT, name) == -1 ? NULL : s;
}

/* The step for NAME: a later change of the same name replaces an
 * earlier one.
 */
static struct step *
step_for (struct state_batch *b, const char *name)
{
  struct step *s;
  size_t i;

  for (i = 0; i < b->nr; i++)
    if (strcmp (b->steps[i].name, name) == 0)
      return &b->steps[i];
  if (b->nr == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 8;
    s = realloc (b->steps, cap * sizeof *s);
    if (s == NULL)
      return NULL;
    b->steps = s;
    b->cap = cap;
  }
  s = &b->steps[b->nr];
  memset (s, 0, sizeof *s);
  if ((s->name = strdup (name)) == NULL)
    return NULL;
  b->nr++;
  return s;
}

/* A step for NAME that renames its staged file; NULL and the batch
 * marked failed if not.
 */
static struct step *
rename_step (struct state_batch *b, const char *name)
{
  struct step *s;

  if (b->failed)
    return NULL;
  if (!state_name_ok (name) || strcmp (name, STATE_BATCH_NAME) == 0) {
    errno = EINVAL;
    goto failed;
  }
  s = step_for (b, name);
  if (s == NULL)
    goto failed;
  if (s->staged == NULL && (s->staged = staged_name (name)) == NULL)
    goto failed;
  s->op = STEP_RENAME;
  return s;

 failed:
  b->failed = true;
  return NULL;
}

int
state_batch_write (struct state_batch *b, const char *name, uint32_t kind,
                   const void *payload, size_t len, unsigned flags)
{
  struct step *s = rename_step (b, name);

  if (s == NULL)
    return -1;
  if (!(flags & STATE_NO_SYNC))
    b->durable = true;
  if (state_write_staged (b->dir, s->staged, kind, payload, len,
                          flags) == -1) {
    b->failed = true;
    return -1;
  }
  return 0;
}

const char *
state_batch_stage (struct state_batch *b, const char *name)
{
  struct step *s = rename_step (b, name);

  return s ? s->staged : NULL;
}

static void
unlink_staged (const struct state_batch *b, const char *staged)
{
  CLEANUP_CLOSE int dfd = open (b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (dfd >= 0)
    unlinkat (dfd, staged, 0);
}

int
state_batch_remove (struct state_batch *b, const char *name)
{
  struct step *s;

  if (b->failed)
    return -1;
  if (!state_name_ok (name) || strcmp (name, STATE_BATCH_NAME) == 0 ||
      (s = step_for (b, name)) == NULL) {
    if (errno != ENOMEM)
      errno = EINVAL;
    b->failed = true;
    return -1;
  }
  if (s->staged) {              /* staged earlier in this batch */
    unlink_staged (b, s->staged);
    free (s->staged);
    s->staged = NULL;
  }
  s->op = STEP_REMOVE;
  return 0;
}

void
state_batch_set_durable (struct state_batch *b)
{
  b->durable = true;
}

bool
state_batch_empty (const struct state_batch *b)
{
  return b->nr == 0;
}

static void
free_batch (struct state_batch *b, bool drop_staged)
{
  size_t i;

  for (i = 0; i < b->nr; i++) {
    if (drop_staged && b->steps[i].staged)
      unlink_staged (b, b->steps[i].staged);
    free (b->steps[i].name);
    free (b->steps[i].staged);
  }
  free (b->steps);
  free (b->dir);
  free (b);
}

void
state_batch_abort (struct state_batch *b)
{
  int saved = errno;

  if (b)
    free_batch (b, true);
  errno = saved;
}

/* One step; repeating it is harmless (a rename whose staged file is
 * gone was done, a removal of a missing name too).
 */
static int
apply_step (int dfd, uint8_t op, const char *name)
{
  CLEANUP_FREE char *staged = NULL;

  switch (op) {
  case STEP_RENAME:
    if ((staged = staged_name (name)) == NULL)
      return -1;
    if (renameat (dfd, staged, dfd, name) == -1 && errno != ENOENT)
      return -1;
    return 0;
  case STEP_REMOVE:
    if (unlinkat (dfd, name, 0) == -1 && errno != ENOENT)
      return -1;
    return 0;
  default:
    errno = EBADMSG;
    return -1;
  }
}

/* Apply the steps in RECORD, then remove the record. */
static int
apply_record (const char *dir, const void *record, size_t len, bool sync)
{
  CLEANUP_CLOSE int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct state_reader r;
  uint32_t nr = 0, i;

  if (dfd == -1)
    return -1;
  state_reader_init (&r, record, len);
  state_get_u32 (&r, &nr);
  for (i = 0; i < nr && r.err == 0; i++) {
    CLEANUP_FREE char *name = NULL;
    uint8_t op = 0;

    if (state_get_u8 (&r, &op) == -1 || state_get_string (&r, &name) == -1)
      break;
    if (!state_name_ok (name)) {
      errno = EBADMSG;
      return -1;
    }
    if (apply_step (dfd, op, name) == -1)
      return -1;
  }
  if (r.err || state_reader_end (&r) == -1) {
    errno = EBADMSG;
    return -1;
  }
  /* The steps reach the disk before the record goes. */
  if (sync && fsync (dfd) == -1)
    return -1;
  if (unlinkat (dfd, STATE_BATCH_NAME, 0) == -1 && errno != ENOENT)
    return -1;
  return sync ? fsync (dfd) : 0;
}

int
state_batch_commit (struct state_batch *b)
{
  unsigned flags = b->durable ? 0 : STATE_NO_SYNC;
  struct state_buf rec = STATE_BUF_INIT;
  size_t i;
  int r;

  /* An earlier batch left committed must be finished first: its steps
   * come before ours.
   */
  if (b->failed ||
      (state_batch_recover (b->dir) == -1 && errno != EBADMSG))
    goto fail;
  if (b->nr == 0) {
    free_batch (b, false);
    return 0;
  }
  state_put_u32 (&rec, b->nr);
  for (i = 0; i < b->nr; i++) {
    state_put_u8 (&rec, b->steps[i].op);
    state_put_string (&rec, b->steps[i].name);
  }
  if (rec.err) {
    errno = rec.err;
    state_buf_free (&rec);
    goto fail;
  }
  /* The commit point. */
  r = state_write_flags (b->dir, STATE_BATCH_NAME, STATE_BATCH_KIND,
                         rec.data, rec.len, flags);
  if (r == -1) {
    state_buf_free (&rec);
    goto fail;
  }
  /* Committed: a failure from here on is finished later. */
  apply_record (b->dir, rec.data, rec.len, b->durable);
  state_buf_free (&rec);
  free_batch (b, false);
  return 0;

 fail:
  state_batch_abort (b);
  return -1;
}

int
state_batch_recover (const char *dir)
{
  CLEANUP_FREE void *data = NULL;
  size_t len;
  int saved;

  if (state_read (dir, STATE_BATCH_NAME, STATE_BATCH_KIND,
                  &data, &len) == -1) {
    if (errno == ENOENT)
      return 0;
    saved = errno;
    if (saved == EBADMSG) {     /* never a commit: forget it */
      CLEANUP_CLOSE int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0)
        unlinkat (dfd, STATE_BATCH_NAME, 0);
    }
    errno = saved;
    return -1;
  }
  /* Durably: the staged files it renames may not have been synced by a
   * crashed process, but they are in the page cache now.
   */
  return apply_record (dir, data, len, true) == -1 ? -1 : 1;
}
