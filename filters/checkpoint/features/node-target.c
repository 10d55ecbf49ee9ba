/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A node of this process as a push job's target (see node-target.h). */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rounding.h"
#include "features/node-target.h"

/* Requests go down in pieces of at most this size (nbdkit's counts
 * are 32 bits).
 */
#define PIECE (32 * 1024 * 1024)
/* Zeros written as data (a node that cannot zero) go by this size. */
#define ZERO_BUF (1024 * 1024)

struct node_target {
  struct node *node;
  nbdkit_next *next;
  bool can_zero;                /* else zeros are written as data */
  bool direct;                  /* see node_target_set_direct */
};

struct node_target *
node_target_open (struct node *n, nbdkit_backend *backend,
                  void (*set_open_export) (const char *),
                  struct qmp_error *err)
{
  struct node_target *t = calloc (1, sizeof *t);

  if (t == NULL) {
    qmp_error (err, "out of memory");
    return NULL;
  }
  t->node = n;
  if (set_open_export)
    set_open_export (n->name);
  t->next = nbdkit_next_context_open (backend, 0, n->name, 1);
  if (t->next == NULL) {
    if (set_open_export)
      set_open_export (NULL);
    qmp_error (err, "Could not open node '%s'", n->name);
    free (t);
    return NULL;
  }
  if (t->next->prepare (t->next) == -1 ||
      t->next->get_size (t->next) < (int64_t) n->size) {
    qmp_error (err, "Could not open node '%s'", n->name);
    node_target_close (t);
    return NULL;
  }
  if (t->next->can_write (t->next) != 1) {
    qmp_error (err, "Node '%s' is read-only", n->name);
    node_target_close (t);
    return NULL;
  }
  /* nbdkit asks these before it lets the requests through. */
  t->can_zero = t->next->can_zero (t->next) > NBDKIT_ZERO_NONE;
  t->next->can_flush (t->next);
  return t;
}

void
node_target_close (struct node_target *t)
{
  if (t == NULL)
    return;
  t->next->finalize (t->next);
  nbdkit_next_context_close (t->next);
  free (t);
}

struct node *
node_target_node (const struct node_target *t)
{
  return t->node;
}

void
node_target_set_direct (struct node_target *t)
{
  t->direct = true;
}

/* The node's write path (as a guest write): bitmaps, hooks, the
 * write itself.  ZERO: BUF is NULL, write zeros.
 */
static int
write_piece (struct node_target *t, const void *buf, uint32_t count,
             uint64_t offset)
{
  int err = 0, r;

  if (t->direct) {
    r = buf ? t->next->pwrite (t->next, buf, count, offset, 0, &err)
            : t->next->zero (t->next, count, offset, NBDKIT_FLAG_MAY_TRIM,
                             &err);
    if (r == -1)
      errno = err ? err : EIO;
    return r;
  }
  if (node_write_begin (t->node, offset, count) == -1)
    return -1;
  if (node_run_write_hooks (t->node, t->next, offset, count, &err) == -1) {
    node_write_end (t->node);
    errno = err ? err : EIO;
    return -1;
  }
  r = buf ? t->next->pwrite (t->next, buf, count, offset, 0, &err)
          : t->next->zero (t->next, count, offset, NBDKIT_FLAG_MAY_TRIM, &err);
  node_write_end (t->node);
  if (r == -1)
    errno = err ? err : EIO;
  return r;
}

int
node_target_write (struct node_target *t, const void *buf, size_t n,
                   uint64_t offset)
{
  const char *p = buf;

  while (n > 0) {
    uint32_t len = MIN (n, PIECE);
    if (write_piece (t, p, len, offset) == -1)
      return -1;
    p += len;
    n -= len;
    offset += len;
  }
  return 0;
}

int
node_target_zero (struct node_target *t, uint64_t offset, uint64_t n)
{
  char *zeros = NULL;
  int r = 0;

  if (!t->can_zero && (zeros = calloc (1, MIN (n, ZERO_BUF))) == NULL)
    return -1;
  while (r == 0 && n > 0) {
    uint32_t len = MIN (n, zeros ? ZERO_BUF : PIECE);
    r = write_piece (t, zeros, len, offset);
    n -= len;
    offset += len;
  }
  free (zeros);
  return r;
}

int
node_target_flush (struct node_target *t)
{
  int err = 0;

  if (t->next->can_flush (t->next) != 1)
    return 0;
  if (t->next->flush (t->next, 0, &err) == -1) {
    errno = err ? err : EIO;
    return -1;
  }
  return 0;
}
